//! Issue 32's recipe traps: an objective with a published recipe brings its weights, and the
//! committed configs take the published settings.

use std::path::Path;

use kd_loss::SoftLoss;
use kd_runner::config;

fn cells(yaml: &str) -> Vec<(SoftLoss, f64, f64)> {
    let r = config::parse(yaml, Path::new("test.yaml"))
        .and_then(|raw| raw.resolve())
        .unwrap_or_else(|e| panic!("{e}"));
    r.cells
        .iter()
        .map(|c| (c.kd.soft_loss, c.kd.alpha, c.kd.beta))
        .collect()
}

/// `soft_loss: dkd` (or `dist`) without kd.alpha/kd.beta silently took KD's 0.9/0.1, where
/// mdistiller's DKD and DIST's recipe weigh CE and the soft term 1 and 1.
#[test]
fn dkd_and_dist_bring_their_recipe_weights_unless_the_config_states_them() {
    let yaml = "name: x\nkd: {temperature: 4}\ngrid: {soft_loss: [ce, kl, dkd, dist]}\n";
    assert_eq!(
        cells(yaml),
        [
            (SoftLoss::Ce, 0.9, 0.1),
            (SoftLoss::Kl, 0.9, 0.1),
            (SoftLoss::Dkd, 1.0, 1.0),
            (SoftLoss::Dist, 1.0, 1.0),
        ]
    );
    // Stated weights win, for every objective.
    let stated = "name: x\nkd: {temperature: 4, alpha: 0.5}\ngrid: {soft_loss: [ce, dkd]}\n";
    assert_eq!(
        cells(stated),
        [(SoftLoss::Ce, 0.5, 0.5), (SoftLoss::Dkd, 0.5, 0.5)]
    );
    assert_eq!(
        cells("name: x\nkd: {soft_loss: dist, beta: 2}\n"),
        [(SoftLoss::Dist, 0.9, 2.0)]
    );
}

/// The published KD+LS results for vgg13 -> vgg8 and vgg13 -> MobileNetV2 ran at base
/// temperature 3 (their logs: `kd,vgg13,vgg8,3,9`); the other pairs at 2.
#[test]
fn the_vgg13_kd_ls_cells_take_the_published_base_temperature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/cifar100");
    for (file, want) in [
        ("vgg13_vgg8.yaml", 3.0),
        ("vgg13_mobilenetv2.yaml", 3.0),
        ("resnet32x4_resnet8x4.yaml", 2.0),
    ] {
        let raw = config::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let r = raw.resolve().unwrap_or_else(|e| panic!("{file}: {e}"));
        let ls: Vec<f64> = r
            .cells
            .iter()
            .filter(|c| c.kd.standardise)
            .map(|c| c.kd.temperature)
            .collect();
        assert_eq!(ls, [want], "{file}");
    }
}
