//! The device pool: trials trained at once in worker processes, one per slot, each on its own
//! device with its own libtorch (and so its own global seed: `tch::manual_seed` is per process,
//! which is why the workers are processes, not threads).
//!
//! Protocol, one line per message: the parent writes `INDEX TRIAL_ID` to a worker's stdin for
//! each trial it hands out and closes stdin when there are no more; the worker answers on stdout
//! with JSON [`Message`]s (an `Epoch` per epoch, then `Done`). A worker that exits early loses
//! only its trial in flight, which is recorded as failed; results so far are already on disk.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::config::Resolved;
use crate::run::{select_device, student_trial_id, RunError, TrialContext};
use crate::train::{EpochLog, Outcome};

/// One worker: the device it trains on and its libtorch threads.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub device: String,
    pub threads: usize,
}

/// What a worker needs besides its spec: the resolved config written in OUT, the cached teacher
/// logits and the teacher's id (trial ids depend on it).
#[derive(Debug)]
pub struct Launch<'a> {
    pub config: &'a Path,
    pub logits: &'a Path,
    pub teacher_id: &'a str,
}

/// What a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Epoch {
        index: usize,
        log: EpochLog,
    },
    Done {
        index: usize,
        result: Result<Outcome, String>,
    },
}

/// What the parent's handler sees.
#[derive(Debug)]
pub enum Event {
    Started {
        slot: usize,
        index: usize,
    },
    Epoch {
        slot: usize,
        log: EpochLog,
    },
    Done {
        slot: usize,
        index: usize,
        result: Result<Outcome, String>,
    },
}

/// The `kd` binary that runs workers: `$KD_WORKER_EXE`, else this executable when it is `kd`.
fn worker_exe() -> Result<PathBuf, RunError> {
    if let Some(exe) = std::env::var_os("KD_WORKER_EXE") {
        return Ok(exe.into());
    }
    let exe = std::env::current_exe().map_err(|e| RunError::Worker(e.to_string()))?;
    if exe.file_stem().is_some_and(|s| s == "kd") {
        Ok(exe)
    } else {
        Err(RunError::Worker(format!(
            "workers > 1 start `kd worker` processes, but this program is {}; set KD_WORKER_EXE \
             to the kd binary or use workers: 1",
            exe.display()
        )))
    }
}

struct Slot {
    child: Child,
    stdin: Option<ChildStdin>,
    busy: Option<usize>,
}

/// Hand out `jobs` (`(plan index, trial id)`) to one worker per spec until all are done, calling
/// `handle` for each event in the parent's thread. Returns when every job has a `Done` (failed
/// ones included); an error from `handle` stops the pool.
pub fn run(
    launch: &Launch,
    specs: &[WorkerSpec],
    jobs: &[(usize, String)],
    mut handle: impl FnMut(Event) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let exe = worker_exe()?;
    let (tx, rx) = mpsc::channel::<(usize, Option<Message>)>();
    let mut slots = Vec::new();
    for (slot, spec) in specs.iter().enumerate() {
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg("--config")
            .arg(launch.config)
            .arg("--logits")
            .arg(launch.logits)
            .args(["--teacher-id", launch.teacher_id])
            .args(["--device", &spec.device])
            .args(["--threads", &spec.threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| RunError::Worker(format!("cannot start {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Message>(&line) {
                    Ok(m) => {
                        if tx.send((slot, Some(m))).is_err() {
                            return;
                        }
                    }
                    // Anything else on stdout is passed on, not lost.
                    Err(_) => eprintln!("worker {slot}: {line}"),
                }
            }
            let _ = tx.send((slot, None));
        });
        slots.push(Slot {
            stdin: child.stdin.take(),
            child,
            busy: None,
        });
    }
    drop(tx);
    let mut queue = jobs.iter();
    for (i, slot) in slots.iter_mut().enumerate() {
        give(slot, i, &mut queue, &mut handle)?;
    }
    let mut live = slots.len();
    while live > 0 {
        let Ok((i, msg)) = rx.recv() else { break };
        match msg {
            Some(Message::Epoch { log, .. }) => handle(Event::Epoch { slot: i, log })?,
            Some(Message::Done { index, result }) => {
                slots[i].busy = None;
                handle(Event::Done {
                    slot: i,
                    index,
                    result,
                })?;
                give(&mut slots[i], i, &mut queue, &mut handle)?;
            }
            None => {
                live -= 1;
                slots[i].stdin = None;
                let status = slots[i].child.wait().ok();
                if let Some(index) = slots[i].busy.take() {
                    handle(Event::Done {
                        slot: i,
                        index,
                        result: Err(format!(
                            "worker {i} on {} exited ({}) during this trial",
                            specs[i].device,
                            status.map_or("unknown status".into(), |s| s.to_string())
                        )),
                    })?;
                }
            }
        }
    }
    // Jobs never handed out because every worker had exited.
    let rest: Vec<&(usize, String)> = queue.collect();
    if !rest.is_empty() {
        return Err(RunError::Worker(format!(
            "every worker exited with {} trial(s) left; the finished ones are saved, run the \
             sweep again to resume",
            rest.len()
        )));
    }
    Ok(())
}

/// Send worker `slot` the next job, or close its stdin when there is none (it then exits).
fn give<'a>(
    worker: &mut Slot,
    slot: usize,
    queue: &mut impl Iterator<Item = &'a (usize, String)>,
    handle: &mut impl FnMut(Event) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let Some((index, id)) = queue.next() else {
        worker.stdin = None;
        return Ok(());
    };
    let sent = worker
        .stdin
        .as_mut()
        .map(|s| writeln!(s, "{index} {id}").and_then(|_| s.flush()));
    if matches!(sent, Some(Ok(()))) {
        worker.busy = Some(*index);
        handle(Event::Started {
            slot,
            index: *index,
        })
    } else {
        handle(Event::Done {
            slot,
            index: *index,
            result: Err(format!(
                "worker {slot} could not take it (see the messages above)"
            )),
        })
    }
}

/// `kd worker`: train the trials the parent hands out on stdin, one at a time.
pub fn worker_main(
    config: &Path,
    logits: &Path,
    teacher_id: &str,
    device: &str,
    threads: usize,
) -> Result<(), RunError> {
    let text = std::fs::read_to_string(config).map_err(|source| RunError::Io {
        file: config.to_path_buf(),
        source,
    })?;
    let cfg: Resolved = serde_yaml::from_str(&text).map_err(|e| {
        RunError::Worker(format!("{}: not a resolved config: {e}", config.display()))
    })?;
    tch::set_num_threads(threads as i32);
    let device = select_device(device)?;
    let ctx = TrialContext::load(&cfg, device, logits)?;
    let plan = cfg.student_trials();
    let stdout = std::io::stdout();
    let send = |m: &Message| {
        let mut out = stdout.lock();
        let line = serde_json::to_string(m).expect("messages serialise");
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The parent is gone: nobody will read this trial's result.
            std::process::exit(1);
        }
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| RunError::Worker(format!("reading stdin: {e}")))?;
        let (index, id) = line
            .split_once(' ')
            .and_then(|(i, id)| Some((i.parse::<usize>().ok()?, id)))
            .ok_or_else(|| RunError::Worker(format!("bad job line `{line}`")))?;
        let result = match plan.get(index) {
            Some(t) if student_trial_id(&cfg, t, teacher_id) == id => ctx.run_trial(t, |log| {
                send(&Message::Epoch {
                    index,
                    log: log.clone(),
                })
            }),
            _ => Err(format!(
                "trial {index} of {} is not {id}: the worker and the sweep disagree on the plan",
                config.display()
            )),
        };
        send(&Message::Done { index, result });
    }
    Ok(())
}
