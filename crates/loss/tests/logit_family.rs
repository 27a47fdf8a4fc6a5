//! The logit-distillation family against short PyTorch transcriptions of the papers' code
//! (DKD: mdistiller's `dkd_loss`; DIST: the authors' `DIST` module; logit standardisation: Sun et
//! al.'s `normalize` before the KL form and before DKD): value and gradient of the whole
//! `alpha * T^2 * L_soft` term, in float64, to 1e-9 (the issue asks 1e-6).
//!
//! The golden values come from this script (the venv's torch; `python golden.py`):
//! ```python
//! import torch, torch.nn.functional as F
//! torch.set_printoptions(precision=10)
//! torch.manual_seed(0)
//! B, C, T = 6, 5, 4.0
//! z0 = (torch.randn(B, C, dtype=torch.float64) * 3)
//! v = (torch.randn(B, C, dtype=torch.float64) * 5)
//! y = torch.tensor([0, 3, 1, 4, 2, 3])
//! def normalize(logit):
//!     mean = logit.mean(dim=-1, keepdims=True)
//!     stdv = logit.std(dim=-1, keepdims=True)
//!     return (logit - mean) / (1e-7 + stdv)
//! def cat_mask(t, mask1, mask2):
//!     t1 = (t * mask1).sum(dim=1, keepdims=True)
//!     t2 = (t * mask2).sum(1, keepdims=True)
//!     return torch.cat([t1, t2], dim=1)
//! def dkd(ls, lt, target, alpha, beta, temperature):
//!     gt = torch.zeros_like(ls).scatter_(1, target.unsqueeze(1), 1).bool()
//!     other = torch.ones_like(ls).scatter_(1, target.unsqueeze(1), 0).bool()
//!     ps = F.softmax(ls / temperature, dim=1); pt = F.softmax(lt / temperature, dim=1)
//!     ps = cat_mask(ps, gt, other); pt = cat_mask(pt, gt, other)
//!     tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * temperature**2 / target.shape[0]
//!     pt2 = F.softmax(lt / temperature - 1000.0 * gt, dim=1)
//!     ls2 = F.log_softmax(ls / temperature - 1000.0 * gt, dim=1)
//!     nckd = F.kl_div(ls2, pt2, reduction="sum") * temperature**2 / target.shape[0]
//!     return alpha * tckd + beta * nckd
//! def pearson(a, b, eps=1e-8):
//!     a = a - a.mean(1).unsqueeze(1); b = b - b.mean(1).unsqueeze(1)
//!     return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
//! def dist(zs, zt, beta, gamma, tau):
//!     ys = (zs / tau).softmax(dim=1); yt = (zt / tau).softmax(dim=1)
//!     inter = tau**2 * (1 - pearson(ys, yt).mean())
//!     intra = tau**2 * (1 - pearson(ys.t(), yt.t()).mean())
//!     return beta * inter + gamma * intra
//! def kl_ls(zs, zt, tau):
//!     zs, zt = normalize(zs), normalize(zt)
//!     return F.kl_div(F.log_softmax(zs / tau, 1), F.softmax(zt / tau, 1), reduction="none").sum(1).mean() * tau**2
//! for name, f in [("dkd", lambda z: dkd(z, v, y, 1.0, 8.0, T)),
//!                 ("dist", lambda z: dist(z, v, 2.0, 2.0, T)),
//!                 ("kl_ls", lambda z: kl_ls(z, v, T)),
//!                 ("dkd_ls", lambda z: dkd(normalize(z), normalize(v), y, 1.0, 8.0, T))]:
//!     z = z0.clone().requires_grad_(True)
//!     l = f(z); l.backward()
//!     print(name, repr(l.item()), [round(x, 12) for x in z.grad.flatten().tolist()])
//! print("z", z0.flatten().tolist()); print("v", v.flatten().tolist())
//! ```

use kd_loss::*;
use tch::{Kind, Tensor};

const Z: [f64; 30] = [
    -6.931235400702528,
    -1.119752583773293,
    -3.1824500356388588,
    2.998528064343528,
    -2.652075013749796,
    -3.826640790644416,
    -1.869673739598237,
    -2.599324805737732,
    -3.8868814209833573,
    4.57089486931905,
    0.9709816994951215,
    6.0531780944583256,
    3.407227020064052,
    -3.6806440170032495,
    1.5599959895368138,
    -2.8586569191098525,
    -0.2752252227244916,
    1.6689683173449317,
    -0.02833883367752371,
    -3.65306333732061,
    -3.7963959240854708,
    -3.358605549081376,
    -5.239214711184726,
    3.1230373711005273,
    1.9617734902052426,
    0.4446463364643025,
    -3.438327669592804,
    5.618329130566025,
    -0.9297449227252402,
    0.720540702113476,
];
const V: [f64; 30] = [
    1.8452236840197598,
    -0.9360109664879435,
    -15.726481365615667,
    -0.5686563878798628,
    8.481012402571976,
    -3.326017402690833,
    -2.936112991799395,
    14.16052083755573,
    -9.80620842071665,
    1.1046218588616088,
    -6.9046832592938365,
    -10.273755087190118,
    0.23788276925120155,
    -1.927843987966851,
    -2.6128543797467128,
    -2.9599928246069016,
    -4.456728029972219,
    -2.2327186615676347,
    -3.506151972828937,
    1.6312789814378101,
    -4.369320109950381,
    1.970634999369243,
    1.9042039742249894,
    -0.3301379933915272,
    -3.782873334062859,
    1.8433655928788004,
    -0.8632684042292105,
    4.8756017259053905,
    2.0822709830585096,
    -2.4932569177107893,
];
const Y: [i64; 6] = [0, 3, 1, 4, 2, 3];

fn check(name: &str, w: KdWeights, value: f64, grad: &[f64]) {
    let z = Tensor::from_slice(&Z).view([6, 5]).set_requires_grad(true);
    let v = Tensor::from_slice(&V).view([6, 5]);
    let y = Tensor::from_slice(&Y);
    let l = distillation_loss(&z, &v, &y, &w).unwrap();
    let got = l.total.double_value(&[]);
    assert!(
        (got - value).abs() < 1e-9,
        "{name}: value {got}, PyTorch {value}"
    );
    let g = Tensor::run_backward(&[&l.total], &[&z], false, false).remove(0);
    let g: Vec<f64> = g.flatten(0, -1).try_into().unwrap();
    for (i, (a, b)) in g.iter().zip(grad).enumerate() {
        assert!(
            (a - b).abs() < 1e-9,
            "{name}: gradient [{i}] {a}, PyTorch {b}"
        );
    }
}

fn weights(soft_loss: SoftLoss) -> KdWeights {
    KdWeights {
        temperature: 4.0,
        alpha: 1.0,
        beta: 0.0,
        soft_loss,
        t2_scaling: true,
        ..KdWeights::hard_only()
    }
}

fn dkd() -> KdWeights {
    KdWeights {
        params: Params {
            dkd: Some(DkdWeights {
                tckd: 1.0,
                nckd: 8.0,
                warmup: 20,
            }),
            ..Params::default()
        },
        ..weights(SoftLoss::Dkd)
    }
}

#[test]
fn dkd_matches_mdistiller() {
    #[rustfmt::skip]
    let grad = [-0.061823422407, 0.640741470956, 0.623853639789, 2.51219780058, -3.714969488918, 0.371659776878, 0.639653840589, -4.41770138513, 0.048429827227, 3.357957940436, 0.773010648458, 0.280874171609, -0.225543069352, -1.019125758979, 0.190784008264, -0.724948195259, 0.347421406562, 0.449909949768, 0.169905498625, -0.242288659696, -0.084549689467, -2.146263989976, -0.182731298399, 1.101431430205, 1.312113547636, -0.453223890226, -0.345203939002, 0.372503005899, -0.070872345043, 0.496797168373];
    check("dkd", dkd(), 90.85010182843772, &grad);
}

#[test]
fn dist_matches_the_authors_module() {
    #[rustfmt::skip]
    let grad = [-0.363667106913, 0.27438743777, 0.389064927925, 0.364189920752, -0.663975179534, 0.75841499808, 0.288660626723, -0.6194690181, 0.206466451294, -0.634073057997, 1.037243215198, 0.018826924462, -0.987788927091, -0.087489277555, 0.019208064986, -0.106157206781, 0.424487044187, -0.250724670745, 0.337806698428, -0.405411865089, 0.448270581732, -0.425702127769, -0.026343888365, -0.719386186021, 0.723161620424, -0.950355718007, 0.124969814862, 0.272253606344, -0.075561471293, 0.628693768094];
    check(
        "dist",
        KdWeights {
            params: Params {
                dist: Some(DistWeights {
                    inter: 2.0,
                    intra: 2.0,
                }),
                ..Params::default()
            },
            ..weights(SoftLoss::Dist)
        },
        73.95577103862745,
        &grad,
    );
}

#[test]
fn logit_standardisation_with_kl_matches_sun_et_al() {
    #[rustfmt::skip]
    let grad = [-0.000797642052, -0.000630293223, 0.012270411238, 0.000718595456, -0.011561071419, 0.003806247215, 0.002781166379, -0.018118934445, 0.009463639623, 0.002067881228, 0.005909836821, 0.008358201034, -0.012617454408, 0.002054440413, -0.00370502386, 0.013942110541, 0.009003512036, -0.009828553591, 0.00298499242, -0.016102061406, 0.011280037475, -0.0072461169, -0.004392363424, -0.004502916186, 0.004861359035, -0.002801912486, 8.544801e-05, -0.002155891472, -0.006145261564, 0.011017617512];
    check(
        "kl_ls",
        KdWeights {
            standardise: true,
            ..weights(SoftLoss::Kl)
        },
        0.8918002015222836,
        &grad,
    );
}

#[test]
fn logit_standardisation_with_dkd_matches_sun_et_al() {
    #[rustfmt::skip]
    let grad = [0.043884850437, -0.02069836886, 0.082766703419, 0.046615254047, -0.152568439044, 0.045232008766, 0.032548181835, -0.162709071849, 0.06824412528, 0.016684755968, 0.091298406985, -0.034546779054, -0.024049616755, -0.048357882412, 0.015655871237, -0.094439183836, 0.050655021762, -0.018717174755, 0.000974436264, 0.061526900566, 0.051590334936, -0.139224132752, 0.057197441705, -0.027367713093, 0.057804069204, -0.045015571928, -0.027291306607, -0.025253675094, 0.001353298159, 0.09620725547];
    check(
        "dkd_ls",
        KdWeights {
            standardise: true,
            ..dkd()
        },
        4.619838171131188,
        &grad,
    );
}

#[test]
fn dkd_warms_up_linearly_and_says_so() {
    let w = KdWeights { beta: 1.0, ..dkd() };
    assert_eq!(w.at_epoch(1).alpha, 0.05);
    assert_eq!(w.at_epoch(10).alpha, 0.5);
    assert_eq!(w.at_epoch(20), w);
    assert_eq!(w.at_epoch(200), w);
    assert_eq!(
        w.describe(true),
        "min(epoch / 20, 1) * 1 * T^2 (= 16) * (1 * TCKD + 8 * NCKD) at T = 4 + 1 * CE(y, q_1)"
    );
    let ls = KdWeights {
        standardise: true,
        ..weights(SoftLoss::Kl)
    };
    assert_eq!(
        ls.describe(true),
        "1 * T^2 (= 16) * KL(p_T || q_T) at T = 4 on z-scored logits + 0 * CE(y, q_1)"
    );
    assert!(!w.packs() && !ls.packs() && weights(SoftLoss::Kl).packs());
    // Parameters of its own keep a student out of a pack whatever its objective says: a pack
    // computes one soft term with its first member's parameters.
    assert!(!KdWeights {
        soft_loss: SoftLoss::Kl,
        ..dkd()
    }
    .packs());
    // The ids of every earlier objective: the new fields are left out of the serialised form.
    let json = serde_json::to_string(&weights(SoftLoss::Kl)).unwrap();
    assert_eq!(
        json,
        r#"{"temperature":4.0,"alpha":1.0,"beta":0.0,"soft_loss":"kl","t2_scaling":true}"#
    );
    // And DKD's as they were when its parameters were fields of the weights (issue 34 moved
    // them into the objective's file): its block beside soft_loss, read back the same.
    let json = serde_json::to_string(&w).unwrap();
    assert_eq!(
        json,
        r#"{"temperature":4.0,"alpha":1.0,"beta":1.0,"soft_loss":"dkd","t2_scaling":true,"dkd":{"tckd":1.0,"nckd":8.0,"warmup":20}}"#
    );
    assert_eq!(serde_json::from_str::<KdWeights>(&json).unwrap(), w);
}

#[test]
fn a_pack_refuses_objectives_that_train_alone() {
    let z = Tensor::zeros([1, 6, 5], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::zeros([1, 6], (Kind::Int64, tch::Device::Cpu));
    let err = packed_distillation_loss(&z, &z, &y, &[dkd()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("an objective that packs"), "{err}");
}

/// Label smoothing of the hard term against PyTorch:
/// ```python
/// torch.manual_seed(0)
/// z = (torch.randn(4, 5, dtype=torch.float64) * 3).requires_grad_(True); y = torch.tensor([0, 3, 1, 4])
/// l = F.cross_entropy(z, y, label_smoothing=0.1); l.backward()
/// ```
#[test]
fn label_smoothing_matches_pytorch_cross_entropy() {
    #[rustfmt::skip]
    let z: [f64; 20] = [-6.931235400702528, -1.119752583773293, -3.1824500356388588, 2.998528064343528, -0.05989425272328796, 0.6308996703050841, 0.5315680541809975, -2.491530153025347, 0.7161541745045119, 2.2005851055818524, -3.9656454874264133, 3.94443409559137, -2.061011082130639, 4.464222947432017, -1.3452474141343533, -2.6730091055122127, 2.0245726307820116, 3.1405961309443966, 0.46288553593976844, -2.2496745685175825];
    #[rustfmt::skip]
    let want: [f64; 20] = [-0.22998857106697, -0.00118143131386, -0.00451461932012, 0.22966437716182, 0.00602024453914, 0.02687302595022, 0.02385918907764, -0.0035959930619, -0.19529046008102, 0.14815423811506, -0.00496588410568, -0.13704758562996, -0.0047708451926, 0.15131552185716, -0.00453120692893, -0.00446813256862, 0.05333607746794, 0.17308201927688, 0.00723785028825, -0.22918781446443];
    let z = Tensor::from_slice(&z).view([4, 5]).set_requires_grad(true);
    let y = Tensor::from_slice(&[0i64, 3, 1, 4]);
    let l = smoothed_cross_entropy(&z, &y, 0.1).unwrap();
    assert!((l.double_value(&[]) - 4.583410734581445).abs() < 1e-12);
    let g = Tensor::run_backward(&[&l], &[&z], false, false).remove(0);
    let g: Vec<f64> = g.flatten(0, -1).try_into().unwrap();
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let plain = hard_cross_entropy(&z, &y).unwrap();
    assert!(
        smoothed_cross_entropy(&z, &y, 0.0).unwrap().equal(&plain),
        "eps 0 is plain CE"
    );
    assert!(smoothed_cross_entropy(&z, &y, 1.0).is_err());
}
