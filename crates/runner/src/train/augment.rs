//! Data augmentation of a training batch: `train.jitter`'s pixel shifts.

use kd_data::SplitMix64;
use tch::Tensor;

/// `x` (`[B, C, H, W]`) with each image shifted by up to `n` pixels in each direction, the
/// shifts drawn from a stream of (`seed`, `epoch`, `batch`) alone (so a KD trial and its
/// baseline see the same shifts), the uncovered border filled with `fill` (the standardised
/// black pixel). One `gather`, on any device.
pub fn jitter(x: &Tensor, n: usize, seed: u64, epoch: u32, batch: usize, fill: f64) -> Tensor {
    if n == 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let n = n as i64;
    let (hp, wp) = (h + 2 * n, w + 2 * n);
    let padded = ((x - fill).constant_pad_nd([n, n, n, n]) + fill).view([b, c, hp * wp]);
    let mut rng = SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((epoch as u64) << 40)
            ^ (batch as u64)
            ^ 0x6a69_7474_6572,
    );
    let offsets: Vec<i64> = (0..b)
        .map(|_| {
            let dy = rng.below(2 * n as u64 + 1) as i64;
            let dx = rng.below(2 * n as u64 + 1) as i64;
            dy * wp + dx
        })
        .collect();
    let device = x.device();
    let base: Vec<i64> = (0..h)
        .flat_map(|i| (0..w).map(move |j| i * wp + j))
        .collect();
    let idx = Tensor::from_slice(&base)
        .to_device(device)
        .view([1, 1, h * w])
        + Tensor::from_slice(&offsets)
            .to_device(device)
            .view([b, 1, 1]);
    padded
        .gather(2, &idx.expand([b, c, h * w], false), false)
        .view([b, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn jitter_shifts_each_image_by_at_most_n_and_fills_the_border() {
        // Four 5x5 images, one bright pixel each at the centre, background -1.
        let x = Tensor::full([4, 1, 5, 5], -1.0, (Kind::Float, tch::Device::Cpu));
        let _ = x.narrow(2, 2, 1).narrow(3, 2, 1).fill_(7.0);
        assert!(jitter(&x, 0, 1, 1, 0, -1.0).equal(&x));
        let j = jitter(&x, 2, 5, 3, 7, -1.0);
        assert_eq!(j.size(), [4, 1, 5, 5]);
        let mut moved = 0;
        for b in 0..4 {
            let img = j.get(b).get(0);
            // Still one bright pixel (a shift of 2 keeps the centre inside), the rest the fill.
            assert_eq!(img.eq(7.0).sum(Kind::Int64).int64_value(&[]), 1);
            assert_eq!(img.eq(-1.0).sum(Kind::Int64).int64_value(&[]), 24);
            let at = img.flatten(0, -1).argmax(0, false).int64_value(&[]);
            let (r, c) = (at / 5, at % 5);
            assert!((r - 2).abs() <= 2 && (c - 2).abs() <= 2);
            moved += i64::from(at != 12);
        }
        assert!(moved > 0, "some image moved");
        // A function of (seed, epoch, batch) alone: a KD trial and its baseline agree.
        assert!(j.equal(&jitter(&x, 2, 5, 3, 7, -1.0)));
        let other = (0..8).any(|b| !jitter(&x, 2, 5, 3, b, -1.0).equal(&j));
        assert!(other, "another batch gets other shifts");
        // A shift of 1 on a 5x5 image whose edge is bright brings in the fill.
        let edge = Tensor::full([16, 1, 5, 5], 3.0, (Kind::Float, tch::Device::Cpu));
        let e = jitter(&edge, 1, 0, 1, 0, -9.0);
        assert!(e.eq(-9.0).sum(Kind::Int64).int64_value(&[]) > 0);
    }
}
