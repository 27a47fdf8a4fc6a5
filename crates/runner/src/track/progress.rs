//! Progress on stderr: indicatif bars on a terminal (the sweep, and an epoch bar per worker),
//! plain lines when stderr is not a terminal or `CI` is set (a Slurm log, CI): one per finished
//! trial, and for a running trial one per minute at most (epoch, loss, validation accuracy,
//! elapsed, ETA), so a 15-minute teacher shows life.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use kd_report::{EpochRecord, Kind, TrialRecord};

#[derive(Debug)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    /// The running trial's epoch bar, per worker slot.
    epoch_bars: Vec<Option<ProgressBar>>,
    /// In plain mode, the running trial per worker slot.
    running: Vec<Option<Running>>,
    /// In plain mode, the least time between two epoch lines of one trial.
    every: std::time::Duration,
}

/// A trial running in plain mode: what its epoch lines say and when the last one was printed.
#[derive(Debug, Clone)]
struct Running {
    label: String,
    epochs: u64,
    started: std::time::Instant,
    printed: std::time::Instant,
}

/// `1h02m`, `4m10s`, `12s`.
fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The plain-mode line of epoch `log` of a running trial, `elapsed` after it started.
fn epoch_line(label: &str, epochs: u64, log: &EpochRecord, elapsed: std::time::Duration) -> String {
    let val = log
        .val_acc
        .map_or(String::new(), |v| format!(" val {:.2}%", 100.0 * v));
    let done = u64::from(log.epoch).max(1);
    let eta = elapsed.mul_f64(epochs.saturating_sub(done) as f64 / done as f64);
    format!(
        "  {label}: epoch {}/{epochs} loss {:.4}{val} elapsed {} eta {}",
        log.epoch,
        log.train_loss,
        duration(elapsed),
        duration(eta)
    )
}

impl Progress {
    /// Bars when stderr is a terminal and `CI` is unset; plain lines otherwise.
    pub fn new(total_trials: u64) -> Self {
        let plain = std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal();
        let every = std::time::Duration::from_secs(
            std::env::var("KD_PROGRESS_EVERY_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        );
        if plain {
            return Progress {
                bars: None,
                epoch_bars: vec![],
                running: vec![],
                every,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let sweep = multi.add(ProgressBar::new(total_trials));
        sweep.set_style(
            ProgressStyle::with_template(
                "trials {pos}/{len} [{bar:30}] elapsed {elapsed} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Progress {
            bars: Some((multi, sweep)),
            epoch_bars: vec![],
            running: vec![],
            every,
        }
    }

    fn slot(&mut self, slot: usize) -> &mut Option<ProgressBar> {
        if self.epoch_bars.len() <= slot {
            self.epoch_bars.resize(slot + 1, None);
        }
        &mut self.epoch_bars[slot]
    }

    /// A trial starts on worker `slot` (0 when trials run in this process).
    pub fn start_trial(&mut self, slot: usize, label: &str, epochs: u64) {
        let Some((multi, _)) = &self.bars else {
            if self.running.len() <= slot {
                self.running.resize(slot + 1, None);
            }
            let now = std::time::Instant::now();
            self.running[slot] = Some(Running {
                label: label.to_string(),
                epochs,
                started: now,
                printed: now,
            });
            return;
        };
        let bar = multi.add(ProgressBar::new(epochs));
        bar.set_style(
            ProgressStyle::with_template("  {prefix} epoch {pos}/{len} [{bar:20}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        if let Some(old) = self.slot(slot).replace(bar) {
            old.finish_and_clear();
        }
    }

    pub fn epoch(&mut self, slot: usize, log: &EpochRecord) {
        if self.bars.is_none() {
            let every = self.every;
            if let Some(Some(r)) = self.running.get_mut(slot) {
                let now = std::time::Instant::now();
                if now.duration_since(r.printed) >= every {
                    r.printed = now;
                    eprintln!(
                        "{}",
                        epoch_line(&r.label, r.epochs, log, now.duration_since(r.started))
                    );
                }
            }
            return;
        }
        if let Some(bar) = self.slot(slot) {
            bar.set_position(log.epoch as u64);
            let val = log
                .val_acc
                .map_or(String::new(), |v| format!(" val {:.2}%", 100.0 * v));
            bar.set_message(format!(
                "loss {:.4} train {:.2}%{val}",
                log.train_loss,
                100.0 * log.train_acc,
            ));
        }
    }

    /// One line per finished trial, printed in both modes.
    pub fn finish_trial(&mut self, slot: usize, line: &str) {
        if let Some(r) = self.running.get_mut(slot) {
            *r = None;
        }
        if let Some(bar) = self.slot(slot).take() {
            bar.finish_and_clear();
        }
        match &self.bars {
            Some((multi, sweep)) => {
                let _ = multi.println(line);
                sweep.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    /// A message that is not a trial result.
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn close_bars(&mut self) {
        for bar in self.epoch_bars.drain(..).flatten() {
            bar.finish_and_clear();
        }
        if let Some((_, sweep)) = self.bars.take() {
            sweep.finish_and_clear();
        }
    }
}

impl super::Output for Progress {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn started(&mut self, slot: usize, label: &str, epochs: u64) -> Result<(), String> {
        self.start_trial(slot, label, epochs);
        Ok(())
    }

    fn epoch(&mut self, slot: usize, log: &EpochRecord) -> Result<(), String> {
        Progress::epoch(self, slot, log);
        Ok(())
    }

    fn finished(
        &mut self,
        slot: usize,
        record: &TrialRecord,
        _epochs: &[EpochRecord],
        kept: bool,
    ) -> Result<(), String> {
        let line = trial_line(record);
        if kept {
            self.finish_trial(slot, &format!("{line} (done before, skipped)"));
        } else {
            self.finish_trial(slot, &line);
        }
        Ok(())
    }

    fn note(&mut self, line: &str) {
        Progress::note(self, line);
    }

    fn close(&mut self) {
        self.close_bars();
    }
}

/// The one line printed per finished trial.
pub fn trial_line(r: &TrialRecord) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    let kd = match (r.temperature, r.alpha) {
        (Some(t), Some(a)) if r.kind == Kind::Kd => format!(" T={t} alpha={a}"),
        _ => String::new(),
    };
    let why = r
        .message
        .as_deref()
        .map_or(String::new(), |m| format!(" ({m})"));
    format!(
        "[{}] {} {} {}{} seed={} status={}{why} test={} val={} ({:.1}s)",
        r.trial_id,
        r.kind,
        r.arch,
        r.hidden,
        kd,
        r.seed,
        r.status,
        pct(r.test_acc),
        pct(r.val_acc),
        r.wall_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_epoch_lines_say_epoch_loss_accuracy_elapsed_and_eta() {
        let log = EpochRecord {
            trial_id: "teacher-x".into(),
            epoch: 25,
            train_loss: 0.123456,
            soft_loss: None,
            hard_loss: 0.123456,
            train_acc: 0.9,
            val_acc: Some(0.9812),
            test_acc: None,
            lr: 0.1,
            seconds: 10.0,
        };
        let line = epoch_line("teacher", 100, &log, std::time::Duration::from_secs(250));
        assert_eq!(
            line,
            "  teacher: epoch 25/100 loss 0.1235 val 98.12% elapsed 4m10s eta 12m30s"
        );
        assert_eq!(duration(std::time::Duration::from_secs(3720)), "1h02m");
        assert_eq!(duration(std::time::Duration::from_secs(7)), "7s");
    }
}
