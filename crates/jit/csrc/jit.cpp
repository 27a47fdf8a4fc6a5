// The few TorchScript calls tch does not bind: a loaded module's buffers (batch-norm running
// statistics and the like) beside its parameters, so that a scripted student can be trained,
// checkpointed and kept with every tensor its evaluation reads. Every function catches C++
// exceptions and returns the message through `err` (freed with kd_jit_free_str).

#include <torch/script.h>

#include <cstring>
#include <string>

namespace {

char *copy_message(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace

#define KD_PROTECT(body)                                      \
  try {                                                       \
    body                                                      \
  } catch (const c10::Error &e) {                             \
    *err = copy_message(e.what_without_backtrace());          \
  } catch (const std::exception &e) {                         \
    *err = copy_message(e.what());                            \
  } catch (...) {                                             \
    *err = copy_message("an unknown C++ exception");          \
  }

extern "C" {

typedef void (*kd_named_cb)(void *data, const char *name, at::Tensor *tensor);

void kd_jit_free_str(char *s) { std::free(s); }

// `device` < 0: the CPU; else that CUDA device.
void *kd_jit_load(const char *path, int device, char **err) {
  KD_PROTECT(
      c10::Device d = device < 0 ? c10::Device(c10::kCPU)
                                 : c10::Device(c10::kCUDA, device);
      auto *m = new torch::jit::Module(torch::jit::load(path, d));
      return m;)
  return nullptr;
}

void kd_jit_free(void *m) { delete static_cast<torch::jit::Module *>(m); }

void kd_jit_set_train(void *m, int train, char **err) {
  KD_PROTECT(static_cast<torch::jit::Module *>(m)->train(train != 0);)
}

at::Tensor *kd_jit_forward(void *m, at::Tensor *x, char **err) {
  KD_PROTECT(
      std::vector<torch::jit::IValue> inputs{*x};
      torch::jit::IValue out = static_cast<torch::jit::Module *>(m)->forward(std::move(inputs));
      if (!out.isTensor()) throw std::invalid_argument("forward did not return a tensor");
      return new at::Tensor(out.toTensor());)
  return nullptr;
}

// Each parameter (buffers == 0) or each buffer (buffers != 0), recursively, with its dotted
// name; the tensors share their storage with the module's.
void kd_jit_named(void *m, int buffers, void *data, kd_named_cb f, char **err) {
  KD_PROTECT(
      auto *mod = static_cast<torch::jit::Module *>(m);
      if (buffers) {
        for (const auto &b : mod->named_buffers()) f(data, b.name.c_str(), new at::Tensor(b.value));
      } else {
        for (const auto &p : mod->named_parameters()) f(data, p.name.c_str(), new at::Tensor(p.value));
      })
}

void kd_jit_save(void *m, const char *path, char **err) {
  KD_PROTECT(static_cast<torch::jit::Module *>(m)->save(path);)
}

}  // extern "C"
