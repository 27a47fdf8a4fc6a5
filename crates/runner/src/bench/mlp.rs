//! The MLP part of `kd bench`: temp.yaml's and student_size.yaml's students, kd-sweep packed,
//! alone and as `pack: auto` runs them, against PyTorch eager and vmap over the same exported
//! data, and one 800-800 KD step; into `OUT/bench.json` and `OUT/report.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use kd_model_zoo::ModelSpec;
use kd_report::Kind;
use tch::{Device, Tensor};

use super::render::render;
use super::step::{kd_step, median, roof};
use super::{
    python_torch, run_script, BenchFile, BenchOptions, ModeResult, Runs, StepResult, Workload,
};
use crate::data::{self, Data, Tensors};
use crate::env;
use crate::error::{io_err, RunError};
use crate::plan::{Plan, PlannedTrial};
use crate::run::teacher;
use crate::run::trial::TrialContext;
use crate::track::Progress;

/// The trials of `config` at `epochs` epochs, with `pack`.
fn plan_of(
    opts: &BenchOptions,
    config: &Path,
    epochs: usize,
    pack: &str,
    data: &Data,
) -> Result<Plan, RunError> {
    let cfg = opts.config(
        config,
        &[
            format!("student.train.epochs={epochs}"),
            format!("pack={pack}"),
        ],
    )?;
    Plan::build(&cfg, data)
}

fn write_raw(dir: &Path, name: &str, t: &Tensor) -> Result<(), RunError> {
    let t = t.to_device(Device::Cpu).contiguous();
    let bytes: Vec<u8> = match t.kind() {
        tch::Kind::Float => Vec::<f32>::try_from(t.flatten(0, -1))
            .unwrap_or_default()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => Vec::<i64>::try_from(t.flatten(0, -1).to_kind(tch::Kind::Int64))
            .unwrap_or_default()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    };
    let file = dir.join(name);
    std::fs::write(&file, bytes).map_err(io_err(&file))
}

/// A planned trial as the PyTorch scripts read it.
fn script_trial(t: &PlannedTrial) -> serde_json::Value {
    // The workloads' students are temp.yaml's MLPs; the scripts know no other family.
    let hidden = match &t.student.model {
        ModelSpec::Mlp(m) => m.hidden.clone(),
        _ => vec![],
    };
    let tr = &t.student.train;
    serde_json::json!({
        "seed": t.seed, "hidden": hidden, "kd": t.kind == Kind::Kd,
        "temperature": t.weights.temperature, "alpha": t.weights.alpha, "beta": t.weights.beta,
        "epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.lr,
        "eval_every": tr.eval_every,
    })
}

/// FLOPs of training and evaluating `trials` (MLPs) on `d`.
fn workload_flops(trials: &[&PlannedTrial], d: &crate::data::DataPlan) -> f64 {
    trials
        .iter()
        .map(|t| {
            let f = t.student.model.flops_per_sample(d.input, d.classes) as f64;
            let e = t.student.train.epochs as f64;
            let evals = (1..=t.student.train.epochs as u32)
                .filter(|&ep| t.student.train.evaluates(ep))
                .count() as f64;
            f * (3.0 * d.transfer_rows as f64 * e
                + (d.val + d.test) as f64 * evals
                + (d.transfer_rows + d.test) as f64)
        })
        .sum()
}

/// A workload: its name, its plan packed and alone, its trials (plan indices).
type Load<'p> = (String, &'p Plan, &'p Plan, Vec<usize>);

/// The teacher of temp.yaml when it is cached; otherwise a quick stand-in (an MLP trained for 2
/// epochs), since only the students are timed. Its plan and how the report names it.
fn bench_teacher(
    opts: &BenchOptions,
    temp_plan: &Plan,
    data: &Data,
) -> Result<(Plan, String), RunError> {
    // The teacher of temp.yaml when it is cached; otherwise a quick stand-in (an MLP trained
    // for 2 epochs), since only the students are timed.
    Ok(if teacher::is_cached(temp_plan) {
        (
            temp_plan.clone(),
            "temp.yaml's CNN teacher (cached)".to_string(),
        )
    } else {
        let cfg = opts.config(
            &opts.temp_config,
            &[
                "teacher.model={arch: mlp, hidden: [1200, 1200], dropout: 0.0}".into(),
                "teacher.train.epochs=2".into(),
            ],
        )?;
        (
            Plan::build(&cfg, data)?,
            "a stand-in MLP teacher trained 2 epochs (temp.yaml's CNN is not cached)".into(),
        )
    })
}

/// Write the workloads' data and trials where the PyTorch scripts read them (`export`):
/// the transfer set with the teacher's logits, the validation and test splits, `meta.json`.
pub(super) fn export_data(
    export: &Path,
    tensors: &Tensors,
    data: &Data,
    logits: &teacher::Logits,
    loads: &[Load],
) -> Result<(), RunError> {
    std::fs::create_dir_all(export).map_err(io_err(export))?;
    let (transfer, soft) = tensors.transfer(&data.transfer, Some(&logits.train));
    let d = &data.plan;
    write_raw(export, "train_x.f32", &transfer.x)?;
    write_raw(export, "train_y.i64", &transfer.y)?;
    write_raw(export, "teacher.f32", &soft.expect("logits given"))?;
    write_raw(export, "val_x.f32", &tensors.val.x)?;
    write_raw(export, "val_y.i64", &tensors.val.y)?;
    write_raw(export, "test_x.f32", &tensors.test.x)?;
    write_raw(export, "test_y.i64", &tensors.test.y)?;
    let workloads: serde_json::Map<String, serde_json::Value> = loads
        .iter()
        .map(|(name, p, _, idx)| {
            (
                name.clone(),
                serde_json::Value::Array(idx.iter().map(|&i| script_trial(&p.trials[i])).collect()),
            )
        })
        .collect();
    let meta = serde_json::json!({
        "train": d.transfer_rows, "val": d.val, "test": d.test,
        "features": d.input.numel(), "classes": d.classes, "workloads": workloads,
    });
    let meta_file = export.join("meta.json");
    std::fs::write(&meta_file, meta.to_string()).map_err(io_err(&meta_file))?;

    Ok(())
}

/// Every workload in every mode, `opts.repeats` times (the modes interleaved within a repeat);
/// the roof measured before each repeat (the best counts). Per (workload, mode), the wall
/// seconds and mean test accuracy of each repeat.
#[allow(clippy::too_many_arguments)]
fn time_modes(
    opts: &BenchOptions,
    loads: &[Load],
    ctx: &TrialContext,
    export_arg: &str,
    threads: usize,
    roof_gflops: &mut f64,
    device: Device,
    progress: &mut crate::track::Outputs,
) -> Result<BTreeMap<(usize, &'static str), Runs>, RunError> {
    let mut raw: BTreeMap<(usize, &'static str), Runs> = BTreeMap::new();
    for rep in 0..opts.repeats {
        *roof_gflops = roof_gflops.max(roof(device));
        for (w, (name, packed_plan, single_plan, idx)) in loads.iter().enumerate() {
            for mode in [
                "kd-sweep packed",
                "kd-sweep single",
                "pytorch eager",
                "pytorch vmap",
            ] {
                let (wall, accs) = match mode {
                    "kd-sweep packed" | "kd-sweep single" => {
                        let plan = if mode == "kd-sweep packed" {
                            packed_plan
                        } else {
                            single_plan
                        };
                        let t0 = Instant::now();
                        let mut accs = vec![];
                        for unit in plan.units(idx) {
                            let trials: Vec<&PlannedTrial> =
                                unit.iter().map(|&i| &plan.trials[i]).collect();
                            for o in ctx.run_unit(&trials, |_, _| {}).unwrap_or_default() {
                                accs.push(o.test_acc.unwrap_or(f64::NAN));
                            }
                        }
                        (t0.elapsed().as_secs_f64(), accs)
                    }
                    _ => {
                        let script = if mode == "pytorch eager" {
                            "pytorch_eager.py"
                        } else {
                            "pytorch_vmap.py"
                        };
                        let o = run_script(opts, &[script, export_arg, name], threads)?;
                        (o.wall_s.unwrap_or(f64::NAN), o.test_acc.unwrap_or_default())
                    }
                };
                progress.note(&format!(
                    "  repeat {} {name} {mode}: {wall:.1} s, mean test {:.2}%",
                    rep + 1,
                    100.0 * accs.iter().sum::<f64>() / accs.len().max(1) as f64
                ));
                let e = raw.entry((w, mode)).or_default();
                e.0.push(wall);
                e.1.push(accs.iter().sum::<f64>() / accs.len().max(1) as f64);
            }
        }
    }
    Ok(raw)
}

/// `pack: auto` picks packed or single per workload here: its row repeats that mode's runs.
fn add_auto_rows(
    opts: &BenchOptions,
    data: &Data,
    loads: &[Load],
    raw: &mut BTreeMap<(usize, &'static str), Runs>,
) -> Result<(), RunError> {
    let auto_plan = plan_of(opts, &opts.size_config, opts.epochs, "auto", data)?;
    let temp_auto = plan_of(opts, &opts.temp_config, opts.epochs, "auto", data)?;
    for (w, (name, _, _, idx)) in loads.iter().enumerate() {
        let p = if name == "temp" {
            &temp_auto
        } else {
            &auto_plan
        };
        let mode = match p.trials[idx[0]].exec {
            kd_report::Exec::Packed => "kd-sweep packed",
            kd_report::Exec::Single => "kd-sweep single",
        };
        if let Some(r) = raw.get(&(w, mode)).cloned() {
            raw.insert((w, "kd-sweep auto"), r);
        }
    }
    Ok(())
}

/// Each (workload, mode)'s medians into `results`, and the student_size grid as a whole.
fn summarise(
    raw: BTreeMap<(usize, &'static str), Runs>,
    results: &mut Vec<Workload>,
    roof_gflops: f64,
    repeats: usize,
) {
    for ((w, mode), (walls, accs)) in raw {
        let m = median(&walls);
        let gflops = results[w].flops / m / 1e9;
        results[w].modes.insert(
            mode.to_string(),
            ModeResult {
                runs: walls.clone(),
                median_s: m,
                mean_test_acc: median(&accs),
                gflops,
                roof_share: gflops / roof_gflops,
            },
        );
    }
    // The student_size grid as a whole.
    let size: Vec<&Workload> = results
        .iter()
        .filter(|w| w.name.starts_with("size_"))
        .collect();
    let mut whole = Workload {
        name: "student_size".into(),
        students: size.iter().map(|w| w.students).sum(),
        hidden: "800/300/30".into(),
        flops: size.iter().map(|w| w.flops).sum(),
        modes: BTreeMap::new(),
    };
    for mode in size
        .first()
        .map(|w| w.modes.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let runs: Vec<f64> = (0..repeats)
            .map(|r| size.iter().map(|w| w.modes[&mode].runs[r]).sum())
            .collect();
        let m = median(&runs);
        let gflops = whole.flops / m / 1e9;
        whole.modes.insert(
            mode.clone(),
            ModeResult {
                runs,
                median_s: m,
                mean_test_acc: size
                    .iter()
                    .map(|w| w.modes[&mode].mean_test_acc * w.students as f64)
                    .sum::<f64>()
                    / whole.students as f64,
                gflops,
                roof_share: gflops / roof_gflops,
            },
        );
    }
    results.push(whole);
}

/// Samples per second of one KD step at batch 128 and 1024: kd-sweep alone and packed (18),
/// and PyTorch eager.
pub(super) fn step_rows(
    opts: &BenchOptions,
    tensors: &Tensors,
    logits: &Tensor,
    input: kd_model_zoo::InputShape,
    export_arg: &str,
    threads: usize,
) -> Result<Vec<StepResult>, RunError> {
    let mut step = vec![];
    for &batch in &opts.step_batches {
        let (single, packed) = kd_step(tensors, logits, batch, input);
        let eager = run_script(
            opts,
            &["pytorch_eager.py", export_arg, "--step", &batch.to_string()],
            threads,
        )?
        .samples_per_s
        .unwrap_or(f64::NAN);
        step.push(StepResult {
            batch,
            kd_single: single,
            kd_packed_18: packed,
            pytorch_eager: eager,
        });
    }
    Ok(step)
}

/// The workloads: temp.yaml's students, and the student_size grid per student size; each
/// with its packed and single plans.
fn loads<'p>(
    temp_plan: &'p Plan,
    temp_single: &'p Plan,
    size_packed: &'p Plan,
    size_single: &'p Plan,
) -> Vec<Load<'p>> {
    let by_hidden = |p: &Plan, h: &str| -> Vec<usize> {
        p.trials
            .iter()
            .filter(|t| t.student.model.shape_label() == h)
            .map(|t| t.index)
            .collect()
    };
    let mut loads: Vec<Load> = vec![(
        "temp".into(),
        temp_plan,
        temp_single,
        (0..temp_plan.trials.len()).collect(),
    )];
    for h in ["800-800", "300-300", "30-30"] {
        loads.push((
            format!("size_{h}"),
            size_packed,
            size_single,
            by_hidden(size_packed, h),
        ));
    }
    loads
}

/// Each workload's row, its modes not yet timed: its size and training FLOPs.
fn workloads(loads: &[Load], d: &crate::data::DataPlan) -> Vec<Workload> {
    loads
        .iter()
        .map(|(name, p, _, idx)| {
            let trials: Vec<&PlannedTrial> = idx.iter().map(|&i| &p.trials[i]).collect();
            Workload {
                name: name.clone(),
                students: idx.len(),
                hidden: trials
                    .first()
                    .map_or(String::new(), |t| t.student.model.shape_label()),
                flops: workload_flops(&trials, d),
                modes: BTreeMap::new(),
            }
        })
        .collect()
}

/// The MLP student phase, into `OUT/bench.json` and `OUT/report.md`.
pub(super) fn run_mlp(opts: &BenchOptions) -> Result<String, RunError> {
    let (base, threads, device, opts) = opts.on_device()?;
    let opts = &opts;
    let data = data::load(&base.dataset)?;
    let mut progress = crate::track::Outputs::new(Progress::new(0), vec![]);
    progress.note(&format!(
        "kd bench: {} epochs, {} repeats, {} threads on {}",
        opts.epochs,
        opts.repeats,
        threads,
        env::device_label(device)
    ));
    // Packed mode packs every workload (`pack: 64`), whatever `pack: auto` would choose here.
    let temp_plan = plan_of(opts, &opts.temp_config, opts.epochs, "64", &data)?;
    let (teacher_plan, teacher_label) = bench_teacher(opts, &temp_plan, &data)?;
    let tensors = Tensors::new(&data, device);
    let t = teacher::obtain(&teacher_plan, &tensors, None, &mut progress)?;
    let ctx = TrialContext::new(&data, &t.logits, Some(&t.files), device);

    // Workloads: names and their trials under each plan.
    let size_packed = plan_of(opts, &opts.size_config, opts.epochs, "64", &data)?;
    let size_single = plan_of(opts, &opts.size_config, opts.epochs, "off", &data)?;
    let temp_single = plan_of(opts, &opts.temp_config, opts.epochs, "off", &data)?;
    let loads = loads(&temp_plan, &temp_single, &size_packed, &size_single);

    // The data the PyTorch scripts read.
    let export = std::path::absolute(opts.out.join(".data")).map_err(io_err(&opts.out))?;
    export_data(&export, &tensors, &data, &t.logits, &loads)?;
    let d = &data.plan;
    let export_arg = export.display().to_string();

    // The roof is measured before every repeat and after the last; the best counts.
    let mut roof_gflops = roof(device);

    let mut results = workloads(&loads, d);
    // (workload, mode) -> (wall seconds, mean test accuracy) per repeat.
    let mut raw = time_modes(
        opts,
        &loads,
        &ctx,
        &export_arg,
        threads,
        &mut roof_gflops,
        device,
        &mut progress,
    )?;
    roof_gflops = roof_gflops.max(roof(device));
    progress.note(&format!(
        "roof: {roof_gflops:.0} GFLOP/s (best 2048^3 float32 matmul)"
    ));
    add_auto_rows(opts, &data, &loads, &mut raw)?;
    summarise(raw, &mut results, roof_gflops, opts.repeats);

    let step = step_rows(
        opts,
        &tensors,
        &t.logits.train,
        d.input,
        &export_arg,
        threads,
    )?;
    progress.note("temp.yaml's seed-0 students at full epochs: test_every 1 vs best");
    let test_every =
        super::evaluation::compare(opts, &opts.temp_config, &data, &ctx, 1, &mut |s| {
            progress.note(s)
        })?;
    let python_torch = python_torch(opts);
    let file = BenchFile {
        machine: env::class_of(device, threads).describe(),
        cpu: env::cpu_model(),
        threads,
        libtorch: env::LIBTORCH_VERSION.to_string(),
        python_torch,
        epochs: opts.epochs,
        repeats: opts.repeats,
        teacher: teacher_label,
        roof_gflops,
        workloads: results,
        step,
        test_every,
    };
    let _ = std::fs::remove_dir_all(&export);
    let json = serde_json::to_string_pretty(&file).expect("bench results serialise");
    kd_report::write_atomic(&opts.out.join("bench.json"), json.as_bytes())?;
    let report = render(&file);
    kd_report::write_atomic(&opts.out.join("report.md"), report.as_bytes())?;
    Ok(report)
}
