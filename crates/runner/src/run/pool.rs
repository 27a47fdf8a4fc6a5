//! The device pool: student trials trained at once in worker processes, one per slot of the
//! plan, each on its own device with its own libtorch (and so its own global seed:
//! `tch::manual_seed` is per process, which is why the workers are processes, not threads).
//!
//! Protocol, one JSON line per message. The parent writes a [`Setup`] first (the planned data,
//! the teacher's logits and the worker's slot), then one unit of the plan per line (a list of
//! [`PlannedTrial`]s: one trial, or a pack), and closes stdin when there are no more. The worker
//! answers on stdout with [`Message`]s (an `Epoch` per trial and epoch, then a `Done` per
//! trial, or a `Stopped` for the unit when a stop was asked for: the parent writes
//! [`STOP_LINE`] to a busy worker when it gets SIGUSR1 or SIGTERM). A unit goes only to a worker of its planned execution class. A worker that exits
//! early loses only its unit in flight, recorded as failed; results so far are already on disk.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use kd_report::EpochRecord;
use serde::{Deserialize, Serialize};

use crate::data::{self, DataPlan};
use crate::env::{self, Slot};
use crate::error::RunError;
use crate::plan::{Plan, PlannedTrial};
use crate::run::trial::TrialContext;
use crate::train::Outcome;

/// What a worker needs before its first trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub data: DataPlan,
    /// The teacher's cached logits and weights.
    pub teacher: crate::run::teacher::TeacherFiles,
    pub slot: Slot,
    /// Where and how often its units checkpoint.
    #[serde(default)]
    pub checkpoints: Option<crate::run::checkpoint::Checkpoints>,
    /// Where and which of its students' weights are kept (`save:`).
    #[serde(default)]
    pub models: Option<crate::run::models::ModelsOut>,
    /// The device as the sweep names it (`cuda:1`) where the worker sees it under another
    /// name (its one visible GPU, `cuda:0`): for the kept models' metadata.
    #[serde(default)]
    pub device_name: Option<String>,
}

/// What a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Epoch {
        index: usize,
        log: EpochRecord,
    },
    Done {
        index: usize,
        outcome: Box<Outcome>,
    },
    /// The unit of trials `unit` stopped on request (`at`: where), its checkpoint written; the
    /// worker then exits.
    Stopped {
        unit: Vec<usize>,
        at: String,
    },
}

/// The line a parent writes to a busy worker's stdin when a stop is asked for (a signal the
/// parent alone got, as `kill PID` sends it).
const STOP_LINE: &str = "\"stop\"";

/// What the parent's handler sees.
#[derive(Debug)]
pub enum Event {
    /// A unit of the plan (one trial or a pack; `unit` holds plan indices) went to worker
    /// `slot` (0, 1, ... in start order).
    Started {
        slot: usize,
        unit: Vec<usize>,
    },
    Epoch {
        slot: usize,
        log: EpochRecord,
    },
    /// The unit of trials `unit` stopped on request, `at` where, its checkpoint written: no
    /// outcome, the next run continues it.
    Stopped {
        unit: Vec<usize>,
        at: String,
    },
    /// Trial `index` ended on worker `slot`, which runs as `on`. `lost`: the worker exited
    /// during it (its outcome says so; a checkpoint it wrote stays, to continue from).
    Done {
        slot: usize,
        index: usize,
        outcome: Box<Outcome>,
        on: Slot,
        lost: bool,
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

struct Worker {
    slot: Slot,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The trials of its unit not finished yet.
    busy: Vec<usize>,
    class: usize,
}

fn send_line(stdin: &mut Option<ChildStdin>, value: &impl Serialize) -> bool {
    let line = serde_json::to_string(value).expect("messages serialise");
    stdin
        .as_mut()
        .is_some_and(|s| writeln!(s, "{line}").and_then(|_| s.flush()).is_ok())
}

/// Train the `pending` trials of `plan` (plan indices) on one worker per slot, calling `handle`
/// for each event in the parent's thread. Returns when every handed-out trial has a `Done`
/// (failed ones included); an error from `handle` stops the pool.
pub fn run(
    plan: &Plan,
    setup: impl Fn(&Slot) -> Setup,
    pending: &[usize],
    mut handle: impl FnMut(Event) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let (tx, rx) = mpsc::channel::<(usize, Option<Message>)>();
    let mut workers = start_workers(plan, &setup, pending, &tx)?;
    drop(tx);
    let mut queue: Vec<Vec<usize>> = plan.units(pending);
    for i in 0..workers.len() {
        give(plan, &mut workers, i, &mut queue, &mut handle)?;
    }
    let mut live = workers.len();
    let mut told = false;
    while live > 0 {
        // A stop asked of this process goes to the workers in a unit, which stop after their
        // current step (those between units get no more).
        if !told && crate::run::stop::requested() {
            told = true;
            for w in workers.iter_mut().filter(|w| !w.busy.is_empty()) {
                send_line(&mut w.stdin, &"stop");
            }
        }
        let (i, msg) = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Some(Message::Stopped { unit, at }) => {
                workers[i].busy.retain(|b| !unit.contains(b));
                handle(Event::Stopped { unit, at })?;
                // The worker exits after a stop, also one that it alone was signalled: the
                // sweep stops too (no unit starts, the others checkpoint).
                crate::run::stop::request();
                workers[i].stdin = None;
            }
            Some(Message::Epoch { log, .. }) => handle(Event::Epoch { slot: i, log })?,
            Some(Message::Done { index, outcome }) => {
                workers[i].busy.retain(|&b| b != index);
                handle(Event::Done {
                    slot: i,
                    index,
                    outcome,
                    on: workers[i].slot.clone(),
                    lost: false,
                })?;
                if workers[i].busy.is_empty() {
                    give(plan, &mut workers, i, &mut queue, &mut handle)?;
                }
            }
            None => {
                live -= 1;
                lost(&mut workers[i], i, &mut handle)?;
            }
        }
    }
    // Trials never handed out because every worker of their class had exited (not because a
    // stop was asked for: the sweep says so itself).
    if !queue.is_empty() && !crate::run::stop::requested() {
        return Err(RunError::Worker(format!(
            "every worker exited with {} trial(s) left; the finished ones are saved, run the \
             sweep again to resume",
            queue.len()
        )));
    }
    Ok(())
}

/// One worker per slot whose class has a pending trial it would not otherwise get, each
/// started with its [`Setup`] and a thread that forwards its stdout's messages to `tx` (then
/// `None` when it exits).
fn start_workers(
    plan: &Plan,
    setup: &impl Fn(&Slot) -> Setup,
    pending: &[usize],
    tx: &mpsc::Sender<(usize, Option<Message>)>,
) -> Result<Vec<Worker>, RunError> {
    let exe = worker_exe()?;
    // A slot starts when its class has a pending trial it would not otherwise get.
    let mut wanted: Vec<usize> = vec![0; plan.classes.len()];
    for &t in pending {
        wanted[plan.trials[t].class] += 1;
    }
    let mut used: Vec<&Slot> = Vec::new();
    for slot in &plan.slots {
        let class = plan
            .classes
            .iter()
            .position(|c| *c == slot.class)
            .unwrap_or(0);
        if wanted[class] > 0 {
            wanted[class] -= 1;
            used.push(slot);
        }
    }
    let mut workers = Vec::new();
    let parent_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    for (i, slot) in used.into_iter().enumerate() {
        // The worker sees exactly its GPU, as cuda:0 (env::worker_env).
        let (worker_env, inside) = env::worker_env(&slot.device, parent_visible.as_deref());
        let mut child = Command::new(&exe)
            .arg("worker")
            .envs(worker_env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| RunError::WorkerSpawn {
                exe: exe.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Message>(&line) {
                    Ok(m) => {
                        if tx.send((i, Some(m))).is_err() {
                            return;
                        }
                    }
                    // Anything else on stdout is passed on, not lost.
                    Err(_) => eprintln!("worker {i}: {line}"),
                }
            }
            let _ = tx.send((i, None));
        });
        let mut stdin = child.stdin.take();
        let seen = Slot {
            device: inside,
            ..slot.clone()
        };
        let setup = Setup {
            device_name: (seen.device != slot.device).then(|| slot.device.clone()),
            ..setup(&seen)
        };
        send_line(&mut stdin, &setup);
        let class = plan
            .classes
            .iter()
            .position(|c| *c == slot.class)
            .unwrap_or(0);
        workers.push(Worker {
            slot: slot.clone(),
            child,
            stdin,
            busy: vec![],
            class,
        });
    }
    Ok(workers)
}

/// Worker `i` exited: each trial it had in flight ends failed (its checkpoint stays).
fn lost(
    w: &mut Worker,
    i: usize,
    handle: &mut impl FnMut(Event) -> Result<(), RunError>,
) -> Result<(), RunError> {
    w.stdin = None;
    let status = w.child.wait().ok();
    for index in std::mem::take(&mut w.busy) {
        handle(Event::Done {
            slot: i,
            index,
            outcome: Box::new(Outcome::failed(format!(
                "worker {i} on {} exited ({}) during this trial",
                w.slot.device,
                status.map_or("unknown status".into(), |s| s.to_string())
            ))),
            on: w.slot.clone(),
            lost: true,
        })?;
    }
    Ok(())
}

/// Send worker `i` the next trial of its class, or close its stdin when there is none (it then
/// exits).
fn give(
    plan: &Plan,
    workers: &mut [Worker],
    i: usize,
    queue: &mut Vec<Vec<usize>>,
    handle: &mut impl FnMut(Event) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let w = &mut workers[i];
    // After a stop request (SIGUSR1) no unit starts: the worker's stdin closes and it exits.
    if crate::run::stop::requested() {
        w.stdin = None;
        return Ok(());
    }
    let Some(pos) = queue
        .iter()
        .position(|u| plan.trials[u[0]].class == w.class)
    else {
        w.stdin = None;
        return Ok(());
    };
    let unit = queue.remove(pos);
    let trials: Vec<&PlannedTrial> = unit.iter().map(|&t| &plan.trials[t]).collect();
    if send_line(&mut w.stdin, &trials) {
        w.busy = unit.clone();
        handle(Event::Started { slot: i, unit })
    } else {
        let on = w.slot.clone();
        for index in unit {
            handle(Event::Done {
                slot: i,
                index,
                outcome: Box::new(Outcome::failed(format!(
                    "worker {i} could not take it (see the messages above)"
                ))),
                on: on.clone(),
                lost: true,
            })?;
        }
        Ok(())
    }
}

/// End this worker within a second of its parent sweep ending, however it ended (SIGTERM,
/// SIGINT, SIGKILL, a crash): an orphan would train on, unseen, beside the next sweep. Its unit
/// has no record, so it runs again on resume.
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(1);
        }
    });
}

/// `kd worker`: read the [`Setup`], then train the units of the plan the parent hands out on stdin
/// (a JSON list of planned trials per line: one trial, or a pack), one unit at a time.
pub fn worker_main() -> Result<(), RunError> {
    // A stop is the parent's to act on: a worker finishes its unit (SIGUSR1 must not kill it).
    crate::run::stop::install();
    exit_with_parent();
    // Stdin is read by a thread of its own: the parent's stop line arrives while a unit trains.
    let (tx, lines) = mpsc::channel::<std::io::Result<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.as_ref().is_ok_and(|l| l.trim() == STOP_LINE) {
                crate::run::stop::request();
            } else if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Result<Option<String>, RunError> {
        lines
            .recv()
            .ok()
            .transpose()
            .map_err(|e| RunError::Worker(format!("reading stdin: {e}")))
    };
    let Some(first) = next()? else { return Ok(()) };
    let setup: Setup = serde_json::from_str(&first)
        .map_err(|e| RunError::Worker(format!("bad setup line: {e}")))?;
    tch::set_num_threads(setup.slot.threads as i32);
    let device = env::select_device(&setup.slot.device)?;
    let here = env::class_of(device, setup.slot.threads);
    if here != setup.slot.class {
        return Err(RunError::Worker(format!(
            "this worker runs as {} but the plan wants {}",
            here.describe(),
            setup.slot.class.describe()
        )));
    }
    let data = data::load_planned(&setup.data)?;
    let files = &setup.teacher;
    let logits = files
        .read_logits(data.plan.train as i64, data.plan.test as i64)
        .map_err(|why| {
            RunError::Worker(format!(
                "{}: not the logits of {}: {why} (the cache changed under the sweep; run it \
                 again)",
                files.logits.display(),
                files.logits_name
            ))
        })?;
    let ctx = TrialContext::new(&data, &logits, Some(files), device)
        .with_checkpoints(setup.checkpoints.clone())
        .with_models(setup.models.clone())
        .with_device_name(setup.device_name.clone());
    let stdout = std::io::stdout();
    let send = |m: &Message| {
        let mut out = stdout.lock();
        let line = serde_json::to_string(m).expect("messages serialise");
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The parent is gone: nobody will read this trial's result.
            std::process::exit(1);
        }
    };
    while let Some(line) = next()? {
        let unit: Vec<PlannedTrial> = serde_json::from_str(&line)
            .map_err(|e| RunError::Worker(format!("bad unit line: {e}")))?;
        let trials: Vec<&PlannedTrial> = unit.iter().collect();
        let outcomes = ctx.run_unit(&trials, |index, log| {
            send(&Message::Epoch {
                index,
                log: log.clone(),
            })
        });
        for note in ctx.take_notes() {
            eprintln!("{note}");
        }
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(crate::run::trial::Stopped(at)) => {
                // Its checkpoint is written: no record; the next run continues it.
                let unit = unit.iter().map(|t| t.index).collect();
                send(&Message::Stopped { unit, at });
                break;
            }
        };
        for (t, outcome) in unit.iter().zip(outcomes) {
            send(&Message::Done {
                index: t.index,
                outcome: Box::new(outcome),
            });
        }
    }
    Ok(())
}
