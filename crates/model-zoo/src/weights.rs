//! Loading a net's variables from a file by name, with errors that name the tensor: a
//! safetensors file (a PyTorch `state_dict` as `tools/pth_to_safetensors.py` writes it, named as
//! the zoo names its variables, which for the CIFAR zoo are the reference code's names), or
//! tch's own `.ot` format.

use std::path::Path;

use tch::nn::VarStore;

/// Load every variable of `vs` from `path`: by name from a `.safetensors` file (extra tensors,
/// such as BN's `num_batches_tracked`, are ignored; a missing one or one of the wrong shape is
/// an error naming it), else with tch's loader.
pub fn load_weights(vs: &mut VarStore, path: &Path) -> Result<(), String> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        // Without its closing full stop: the caller's sentence goes on after it.
        return vs
            .load(path)
            .map_err(|e| torch_message(&e).trim_end_matches('.').to_string());
    }
    let file: std::collections::HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(path)
        .map_err(|e| format!("not a readable safetensors file ({})", torch_message(&e)))?
        .into_iter()
        .collect();
    let mut names: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in &names {
        let Some(t) = file.get(name) else {
            let mut have: Vec<&String> = file.keys().collect();
            have.sort();
            let shown: Vec<&str> = have.iter().take(6).map(|s| s.as_str()).collect();
            return Err(format!(
                "no tensor `{name}` (the model needs it; the file has {} tensors: {}{})",
                have.len(),
                shown.join(", "),
                if have.len() > 6 { ", ..." } else { "" }
            ));
        };
        if t.size() != var.size() {
            return Err(format!(
                "tensor `{name}` has shape {:?}, the model's is {:?} (another model's weights?)",
                t.size(),
                var.size()
            ));
        }
    }
    tch::no_grad(|| {
        for (name, var) in &names {
            let t = &file[name];
            var.shallow_clone()
                .f_copy_(&t.to_kind(var.kind()).to_device(var.device()))
                .map_err(|e| format!("tensor `{name}`: {}", torch_message(&e)))?;
        }
        Ok(())
    })
}

/// A libtorch error as one message without libtorch's C++ backtrace (the `Exception raised
/// from ...` and `frame #N: ...` lines it appends), which says nothing to a user; the whole
/// text where `RUST_BACKTRACE` is set (other than `0`).
pub fn torch_message(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    if std::env::var("RUST_BACKTRACE").is_ok_and(|v| v != "0") {
        return text;
    }
    let kept: Vec<&str> = text
        .lines()
        .take_while(|l| {
            let l = l.trim_start();
            !l.starts_with("Exception raised from") && !l.starts_with("frame #")
        })
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    match kept.is_empty() {
        true => text.lines().next().unwrap_or_default().to_string(),
        false => kept.join(" "),
    }
}
