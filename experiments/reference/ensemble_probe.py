"""Why the MNIST ensemble of experiments/hinton2015/mnist/ensemble.yaml gains nothing over one member:
the same member recipe in plain PyTorch, on kd-sweep's split, with PyTorch's own batch order
(torch.randperm per epoch from a generator seeded by the member's seed) and training loop. The
initial weights are nn.Linear's defaults after torch.manual_seed(seed): the very weights kd-sweep's
member of that seed starts from (`init: torch`), so the members still differ from one another by
their seeds' initialisation, as kd-sweep's do. Trains K unregularised 800-800 nets (SGD, momentum
0.9, cosine per step, batch 128), then prints each member's test errors, the members' pairwise
disagreement, how many members are wrong on each test image, and the errors of the ensemble (mean
of probabilities) of all K. Compare with the same numbers from kd-sweep's cached members
(docs/hinton.md, section 4).

Run:
  .venv/bin/python experiments/reference/ensemble_probe.py [--members 3] [--epochs 60]
      [--lr 0.01] [--seed 100] [--threads 1]
"""

import argparse
import itertools
import json
import time

import torch

from pytorch_mnist import Mlp, load, predict, train


def torch_order(seed):
    """PyTorch's own shuffling: torch.randperm per epoch from a generator seeded once."""
    gen = torch.Generator().manual_seed(seed)
    return lambda _seed, _epoch, n: torch.randperm(n, generator=gen)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load()
    x, y = data["test"]
    logits = []
    for m in range(a.members):
        start = time.time()
        seed = a.seed + m
        torch.manual_seed(seed)
        net = train(Mlp([800, 800]), data, seed, a.epochs, a.lr, 0.9, 128, 0, None, order=torch_order(seed))
        logits.append(predict(net, x))
        errors = int((logits[-1].argmax(-1) != y).sum())
        print(json.dumps({"member": seed, "test_errors": errors, "wall_s": round(time.time() - start)}), flush=True)
    stack = torch.stack(logits).double()
    pred = stack.argmax(-1)
    wrong = pred != y
    pairs = [float((pred[i] != pred[j]).float().mean()) for i, j in itertools.combinations(range(a.members), 2)]
    ensemble = int((stack.softmax(-1).mean(0).argmax(-1) != y).sum())
    print(json.dumps({
        "member_errors": wrong.sum(1).tolist(),
        "pairwise_disagreement": [round(p, 4) for p in pairs],
        "members_wrong_histogram": torch.bincount(wrong.sum(0), minlength=a.members + 1).tolist(),
        "ensemble_errors": ensemble,
    }))


if __name__ == "__main__":
    main()
