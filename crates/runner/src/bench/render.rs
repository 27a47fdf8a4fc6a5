//! `OUT/report.md` of `kd bench`: the tables of a [`BenchFile`].

use std::fmt::Write as _;

use super::BenchFile;

/// The report of `b`.
pub(super) fn render(b: &BenchFile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# kd bench\n");
    let _ = writeln!(
        s,
        "{} ({}), {} threads, libtorch {}, PyTorch {} for the scripts. Student phase only \
         (teacher logits given: {}), epochs per student: {}; val and test evaluated after every \
         epoch in every mode. Medians of {} repeats, modes interleaved. Regenerate with `just \
         bench`.\n",
        b.cpu, b.machine, b.threads, b.libtorch, b.python_torch, b.teacher, b.epochs, b.repeats
    );
    let _ = writeln!(
        s,
        "| workload | students | mode | median s | x eager | x vmap | x single | GFLOP/s | % of roof | mean test % |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for w in &b.workloads {
        let base = |m: &str| w.modes.get(m).map_or(f64::NAN, |r| r.median_s);
        for (mode, r) in &w.modes {
            let _ = writeln!(
                s,
                "| {} ({}) | {} | {mode} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0}% | {:.2} |",
                w.name,
                w.hidden,
                w.students,
                r.median_s,
                base("pytorch eager") / r.median_s,
                base("pytorch vmap") / r.median_s,
                base("kd-sweep single") / r.median_s,
                r.gflops,
                100.0 * r.roof_share,
                100.0 * r.mean_test_acc
            );
        }
    }
    let _ = writeln!(
        s,
        "\nRoof: {:.0} GFLOP/s (the best 2048x2048x2048 float32 matmul in libtorch here, measured \
         before every repeat). `kd-sweep auto` is what `pack: auto` runs (packed or single per \
         student size; its times are that mode's).\n",
        b.roof_gflops
    );
    step_table(&b.step, &mut s);
    let t = &b.test_every;
    let _ = writeln!(
        s,
        "\nThe test split only where a record reports it (`train.test_every`): temp.yaml's {} \
         students of seed 0 at their full {} epochs, alone, one run each way:\n\n| test split \
         measured | student phase s | speed-up | test passes per student | same reported \
         numbers |\n|---|---:|---:|---:|---|\n| after every epoch (`test_every: 1`) | {:.1} | \
         1.00 | {} | |\n| the best validation epoch (kept weights) and the last (`best`) | {:.1} | {:.2} | \
         {:.1} | {} |",
        t.students,
        t.epochs,
        t.every_epoch_s,
        t.epochs,
        t.best_s,
        t.every_epoch_s / t.best_s,
        t.best_test_passes,
        if t.same_numbers { "yes" } else { "NO" }
    );
    s
}

/// The table of one 800-800 KD step's samples/s: kd-sweep alone and 18 packed against PyTorch
/// eager, on the device each ran on (the same).
pub(super) fn step_table(steps: &[super::StepResult], s: &mut String) {
    let _ = writeln!(
        s,
        "One 800-800 KD step (forward, loss, backward, Adam), samples/s:\n\n| batch | kd-sweep alone | kd-sweep 18 packed | PyTorch eager | alone / eager | packed / eager |\n|---:|---:|---:|---:|---:|---:|"
    );
    for st in steps {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            st.batch,
            st.kd_single,
            st.kd_packed_18,
            st.pytorch_eager,
            st.kd_single / st.pytorch_eager,
            st.kd_packed_18 / st.pytorch_eager
        );
    }
}
