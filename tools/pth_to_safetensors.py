"""Convert a PyTorch checkpoint to safetensors for `teacher.checkpoint`: a `.pth` holding a
state_dict, or RepDistiller's / mdistiller's `{"model": state_dict, ...}` (a DataParallel
`module.` prefix is dropped, and BN's `num_batches_tracked`, which kd-sweep does not keep).
Usage: python tools/pth_to_safetensors.py teacher.pth teacher.safetensors
"""
import json, struct, sys
import torch

ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
header, blobs, offset = {}, [], 0
for name, t in sd.items():
    data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
head = json.dumps(header).encode()
head += b" " * (-len(head) % 8)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
print(f"{sys.argv[2]}: {len(sd)} tensors")
