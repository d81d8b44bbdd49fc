//! `regop train --zoo DIR --requirement minimise|fairness|prune`: train one editor for a
//! requirement on a zoo's training models, validated on its validation models; the best
//! checkpoint is kept, and `--resume` continues an interrupted run to the same result.

use super::data::DataArgs;
use super::{Global, Printer};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::requirement::{FairTarget, MinimiseBase, Requirement};
use crate::workflows::edit::checkpoint::Decided;
use crate::workflows::train::{train, Decision, Event, TrainConfig, Trainer, Validation};
use crate::workflows::train::{BEST, LAST};
use crate::workflows::zoo::load::zoo_data;
use crate::workflows::zoo::read_manifest;
use crate::workflows::zoo::Manifest;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The zoo directory (its train models train the editor, its val models pick the checkpoint).
    #[arg(long)]
    pub zoo: PathBuf,
    #[arg(long, value_enum)]
    pub requirement: Requirement,
    /// Fairness gap to close (fairness).
    #[arg(long, value_enum, default_value = "eo")]
    pub gap: Gap,
    /// Training steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Models per step.
    #[arg(long, default_value_t = 8)]
    pub models_per_step: usize,
    /// Data rows per step (default 512; 2048 for fairness, whose soft group rates need many
    /// rows to be steady).
    #[arg(long)]
    pub step_rows: Option<usize>,
    /// The editor's learning rate (Adam), until --lr-schedule sets another.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Later learning rates, "STEP:LR,...": from step STEP on, LR (steps ascending). With
    /// --resume and a larger --steps, a finished run goes on at a lower rate.
    #[arg(long, value_delimiter = ',', value_name = "STEP:LR")]
    pub lr_schedule: Vec<String>,
    /// Editor width.
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Editor message-passing layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Scale of the editor's weight deltas.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f32,
    /// Temperature of the pruning mask's straight-through surrogate (on log-magnitude or log
    /// LAMP scores). 0 keeps the rule's mask and learns only the compensating deltas (stable);
    /// above 0 the editor also learns which weights to keep (`lamp` and `magnitude`, and
    /// `lamp-reconstruction`, whose pruned weights may then come back at their own values).
    #[arg(long, default_value_t = 0.0)]
    pub tau: f32,
    /// Where a pruning edit starts (prune): OBS reconstruction on a calibration batch of the
    /// data (its mask kept; edits need --data); LAMP's mask with the kept weights re-solved on
    /// that batch (`lamp-reconstruction`, mask kept, edits need --data); neuron reconstruction
    /// (`neurons`); or the top weights by LAMP score (magnitude relative to the larger weights of
    /// its layer) or by magnitude, the editor learning the mask.
    #[arg(long, value_enum, default_value = "obs")]
    pub prune_score: crate::requirement::PruneScore,
    /// Sharpness of the fairness penalty's soft decisions, sigmoid(sharpness * logit)
    /// (fairness): higher tracks the hard decisions' rates more closely.
    #[arg(long, default_value_t = crate::requirement::FAIR_SHARPNESS)]
    pub fair_sharpness: f32,
    /// What a fairness editor learns: `shift` moves each group's logits by shifts it is given
    /// (group thresholds folded into the weights; `edit --max-eo-gap` picks them from data);
    /// `penalty` trades JSD against a soft gap penalty weighted by lambda; `drop-attribute`
    /// does so with the sensitive attribute's columns removed (fairness without the attribute
    /// at prediction time; edits start from their least-squares fold and need --data).
    #[arg(long, value_enum, default_value = "shift")]
    pub fair_target: crate::requirement::FairTarget,
    /// The editor reads data: on a calibration batch, the gradient of its loss where the edit
    /// starts (with --label-weight, the labels' cross-entropy in it too) and every neuron's
    /// activations (its edits then need --data, like the training). Default: on for prune, off
    /// otherwise.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub signals: Option<bool>,
    /// Where a minimisation edit (or a drop-attribute fairness edit) starts: the removed
    /// columns' means folded into the biases (`mean`), their least-squares prediction from
    /// the kept columns folded into those columns' weights (`least-squares`), per model
    /// whichever of the two stays closer to it on the calibration batch (`closer`), or the
    /// least-squares fold with every later layer refitted on the calibration batch to the
    /// model's own pre-activations (`reconstruction`), or that and one natural-gradient step
    /// on the calibration batch's labels (`reconstruction-step`); edits from all but the
    /// first need --data. Default: least-squares for minimise; mean for
    /// drop-attribute, since predicting the attribute from its proxies keeps the gap it is
    /// dropped to close (on Adult's validation models the mean fold complies on 81%, the
    /// least-squares fold on 0%).
    #[arg(long, value_enum)]
    pub minimise_base: Option<crate::requirement::MinimiseBase>,
    /// Per-group logit shifts drawn in training, uniformly ("LO,HI"; shift editors).
    #[arg(long, value_delimiter = ',', default_value = "-1.5,1.5")]
    pub shift_range: Vec<f32>,
    /// Fairness weights drawn in training, log-uniformly ("LO,HI"; penalty and drop-attribute
    /// editors; the lambda search of their edits spans the same range). Default 0.1,30; for
    /// drop-attribute editors 0.01,30, which made more validation models compliant on Adult
    /// (81% against 69%) and Bank (50% against 25%).
    #[arg(long, value_delimiter = ',')]
    pub lambda_range: Option<Vec<f32>>,
    /// Target sparsities drawn in training, uniformly ("LO,HI").
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.95")]
    pub sparsity_range: Vec<f32>,
    /// Prune editors: draw sparsities from N evenly spaced points of --sparsity-range (ends
    /// included) instead. Each model then has at most N starts, each computed once: what makes
    /// OBS or neuron starts affordable on wide inputs (mnist_5k: 784 columns).
    #[arg(long, value_name = "N")]
    pub sparsity_grid: Option<usize>,
    /// The fairness bound the best checkpoint is chosen for (fairness): the share of
    /// validation models the search (shifts or lambda) makes meet it, accuracy drop at most 2
    /// points.
    #[arg(long, default_value_t = 0.05)]
    pub max_gap: f64,
    /// Most features removed at once in training (minimise, and prune with --also-drop).
    #[arg(long, default_value_t = 4)]
    pub max_removed: usize,
    /// Prune editors that start from a rule's mask (obs, neurons): half the training asks also
    /// remove 1 to --max-removed features, so that one edit can drop features and prune
    /// (`edit --drop F --sparsity S`). The removed columns are folded (--minimise-base) before
    /// the rule prunes.
    #[arg(long)]
    pub also_drop: bool,
    /// Drop-attribute fairness editors: every training ask also prunes, at a sparsity drawn
    /// from --sparsity-range, so that one edit drops the attribute, closes the gap and prunes
    /// (`edit --max-eo-gap G --sparsity S`). OBS reconstruction of the folded model is where the
    /// edit starts; its mask is kept.
    #[arg(long)]
    pub also_prune: bool,
    /// Weight of a cross-entropy to the training rows' labels added to the loss (sigmoid for
    /// binary models, softmax for several classes): the JSD to the original alone rewards
    /// imitating it, labels reward being right. With --signals the editor also reads that
    /// cross-entropy's gradient on the calibration batch: where the edit starts from a rule
    /// that already imitates the model (mnist_5k's fold + reconstruction), it is the only
    /// gradient left to read.
    #[arg(long, default_value_t = 0.0)]
    pub label_weight: f32,
    /// Validate and keep the moving average of the editor's parameters instead of the last
    /// step's: averaging smooths the noise of single steps. The decay after t steps is
    /// min(DECAY, (1 + t) / (10 + t)), so in runs of up to about 1,800 steps 0.995 leaves the
    /// second in charge (the average leans on about the last tenth of the run). 0: off.
    #[arg(long, value_name = "DECAY", default_value_t = 0.0)]
    pub average: f32,
    /// Whether edits pick their step along the editor's edit on the training rows (minimise and
    /// prune editors): auto turns it on where it raises the accuracy of the zoo's validation
    /// models (all of them, not only --val-models) on the validation split; the choice is saved
    /// with the editor.
    #[arg(long, value_enum, default_value_t = Decision::Auto)]
    pub step_search: Decision,
    /// Whether an editor that moves LAMP's mask (prune, --prune-score lamp-reconstruction,
    /// --tau above 0) keeps only its mask, the kept weights re-solved on the calibration batch
    /// as the rule re-solves its own: auto turns it on where it raises the accuracy of the
    /// zoo's validation models on the validation split; the choice is saved with the editor.
    #[arg(long, value_enum, default_value_t = Decision::Auto)]
    pub resolve_mask: Decision,
    /// Whether a minimisation or prune editor's edits end with one natural-gradient step on
    /// the calibration batch's labels (as `compare`'s rules with "+ natural step"; zero
    /// weights stay zero): auto turns it on where it raises the accuracy of the zoo's
    /// validation models on the validation split; the choice is saved with the editor.
    #[arg(long, value_enum, default_value_t = Decision::Auto)]
    pub natural_step: Decision,
    /// Rows of the calibration batch the edits read (the rules they start from: OBS, LAMP +
    /// reconstruction, neuron reconstruction; and the signals). A Gram matrix of d inputs needs
    /// more than d rows: on mnist_5k's 784 pixels, 2048 re-solves LAMP's mask far better than
    /// 512. Saved with the editor; its edits and `compare` read as many.
    #[arg(long, default_value_t = crate::io::data::CALIBRATION_ROWS)]
    pub calibration_rows: usize,
    /// Validate (and checkpoint) every this many steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Validation models that judge checkpoints (the step search measures on all of the zoo's)
    #[arg(long, default_value_t = 16)]
    pub val_models: usize,
    /// Output directory (default ZOO/editor-REQUIREMENT): editor.safetensors (best) and
    /// last.safetensors.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from last.safetensors in --out, with the same flags; a larger --steps trains
    /// a finished run longer (the same editor as a run started with those steps), and a
    /// --lr-schedule may set the rates of steps not yet done.
    #[arg(long)]
    pub resume: bool,
    /// Replace an editor already in --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// "STEP:LR" pieces, steps ascending and rates positive.
fn lr_schedule(pieces: &[String]) -> Result<Vec<(usize, f32)>> {
    let bad = |p: &str| {
        Error::Usage(format!(
            "--lr-schedule: {p:?} is not STEP:LR with steps ascending and LR > 0"
        ))
    };
    let mut out: Vec<(usize, f32)> = Vec::new();
    for p in pieces {
        let (step, lr) = p.split_once(':').ok_or_else(|| bad(p))?;
        let step: usize = step.trim().parse().map_err(|_| bad(p))?;
        let lr: f32 = lr.trim().parse().map_err(|_| bad(p))?;
        if !(lr > 0.0 && lr.is_finite()) || out.last().is_some_and(|&(s, _)| s >= step) {
            return Err(bad(p));
        }
        out.push((step, lr));
    }
    Ok(out)
}

fn pair(name: &str, v: &[f32], ok: impl Fn(f32) -> bool) -> Result<(f32, f32)> {
    match v {
        [lo, hi] if lo <= hi && ok(*lo) && ok(*hi) => Ok((*lo, *hi)),
        _ => Err(Error::Usage(format!(
            "--{name} wants LO,HI with LO <= HI in range"
        ))),
    }
}

pub fn config(g: &Global, a: &Args) -> Result<TrainConfig> {
    if a.steps == 0
        || a.models_per_step == 0
        || a.step_rows == Some(0)
        || a.eval_every == 0
        || a.hidden == 0
        || a.layers == 0
    {
        return Err(Error::Usage("--steps, --models-per-step, --step-rows, --eval-every, --hidden and --layers must be positive".into()));
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return Err(Error::Usage("--lr must be a positive number".into()));
    }
    if !(a.fair_sharpness > 0.0 && a.fair_sharpness.is_finite()) {
        return Err(Error::Usage(
            "--fair-sharpness must be a positive number".into(),
        ));
    }
    if a.also_drop && (a.requirement != Requirement::Prune || !a.prune_score.keeps_rule_mask()) {
        return Err(Error::Usage(
            "--also-drop applies to prune editors that start from a rule's mask (--prune-score obs or neurons)".into(),
        ));
    }
    if a.also_drop
        && a.tau > 0.0
        && a.prune_score == crate::requirement::PruneScore::LampReconstruction
    {
        return Err(Error::Usage(
            "--also-drop keeps the rule's mask: it does not go with --tau above 0 on --prune-score lamp-reconstruction".into(),
        ));
    }
    if a.also_prune
        && (a.requirement != Requirement::Fairness || a.fair_target != FairTarget::DropAttribute)
    {
        return Err(Error::Usage(
            "--also-prune applies to fairness editors with --fair-target drop-attribute".into(),
        ));
    }
    if !(a.label_weight >= 0.0 && a.label_weight.is_finite()) {
        return Err(Error::Usage("--label-weight must be a number >= 0".into()));
    }
    if !(0.0..1.0).contains(&a.average) {
        return Err(Error::Usage("--average must be in [0, 1)".into()));
    }
    if !(a.max_gap > 0.0 && a.max_gap < 1.0) {
        return Err(Error::Usage("--max-gap must be in (0, 1)".into()));
    }
    Ok(TrainConfig {
        gap: a.gap,
        steps: a.steps,
        models: a.models_per_step,
        rows: a.step_rows.unwrap_or(TrainConfig::new(a.requirement).rows),
        lr: a.lr,
        lr_schedule: lr_schedule(&a.lr_schedule)?,
        hidden: a.hidden,
        layers: a.layers,
        gamma: a.gamma,
        tau: a.tau,
        fair_sharpness: a.fair_sharpness,
        prune_score: a.prune_score,
        fair_target: a.fair_target,
        signals: a.signals.unwrap_or(TrainConfig::new(a.requirement).signals),
        minimise_base: a.minimise_base.unwrap_or(match a.fair_target {
            FairTarget::DropAttribute if a.requirement == Requirement::Fairness => {
                MinimiseBase::Mean
            }
            _ => MinimiseBase::LeastSquares,
        }),
        lambda: match &a.lambda_range {
            Some(range) => pair("lambda-range", range, |v| v > 0.0)?,
            None if a.fair_target == FairTarget::DropAttribute => (0.01, 30.0),
            None => TrainConfig::new(a.requirement).lambda,
        },
        shift_range: pair("shift-range", &a.shift_range, |v| v.abs() <= 10.0)?,
        sparsity: pair("sparsity-range", &a.sparsity_range, |v| {
            (0.0..1.0).contains(&v)
        })?,
        sparsity_grid: match a.sparsity_grid {
            Some(0) => return Err(Error::Usage("--sparsity-grid: at least 1 point".into())),
            Some(_) if a.requirement != Requirement::Prune => {
                return Err(Error::Usage(
                    "--sparsity-grid is for prune editors (--requirement prune)".into(),
                ))
            }
            n => n,
        },
        max_removed: a.max_removed.max(1),
        also_drop: a.also_drop,
        also_prune: a.also_prune,
        label_weight: a.label_weight,
        average: a.average,
        step_search: a.step_search,
        resolve_mask: a.resolve_mask,
        natural_step: a.natural_step,
        calibration_rows: match a.calibration_rows {
            0 => return Err(Error::Usage("--calibration-rows: at least 1 row".into())),
            n => n,
        },
        max_gap: a.max_gap,
        eval_every: a.eval_every,
        val_models: a.val_models.max(1),
        seed: g.seed,
        ..TrainConfig::new(a.requirement)
    })
}

/// What to do when the device runs out of memory in training (a step is already computed in
/// pieces of models, down to one).
const ROOM_ADVICE: &str = "lower --step-rows or --models-per-step, or use --device cpu";

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let cfg = config(g, &a)?;
    let manifest = read_manifest(&a.zoo)?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.zoo
            .join(format!("editor-{:?}", a.requirement).to_lowercase())
    });
    if out.join(BEST).exists() && !a.force && !a.resume {
        return Err(Error::input(
            &out,
            "already holds an editor (pass --resume to continue it or --force to replace it)",
        ));
    }
    let data = zoo_data(&a.zoo, &manifest, a.data.data.as_deref())?;
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let room = |e: Error| e.with_room_advice(ROOM_ADVICE);
    let trainer = Trainer::new(&cfg, &a.zoo, &manifest, &data).map_err(room)?;
    let n_train: usize = trainer.train.values().map(Vec::len).sum();
    p.status(&format!(
        "training a {:?} editor (H={}, {} layers) on {} models in {} architectures; {} validation models",
        a.requirement,
        cfg.hidden,
        cfg.layers,
        n_train,
        trainer.train.len(),
        trainer.val.len()
    ));
    if a.resume && out.join(LAST).exists() {
        p.status(&format!("resuming from {}", out.join(LAST).display()));
    }
    if !cfg.lr_schedule.is_empty() {
        let phases: Vec<String> = cfg
            .lr_schedule
            .iter()
            .map(|(step, lr)| format!("{lr:e} from step {step}"))
            .collect();
        p.status(&format!(
            "learning rate {:e}, then {}",
            cfg.lr,
            phases.join(", ")
        ));
    }
    if cfg.average > 0.0 {
        p.status(&format!(
            "validating and keeping the moving average of the parameters (decay {})",
            cfg.average
        ));
    }
    let best = train_with_progress(p, &dev, &trainer, &manifest, &out, a.resume).map_err(room)?;
    if p.json {
        p.json(&serde_json::json!({"editor": out.join(BEST), "best": best}));
    } else {
        p.result(&format!(
            "best at step {}: {}\nwritten: {}",
            best.step,
            describe(&cfg, &best),
            out.join(BEST).display()
        ));
    }
    Ok(0)
}

/// A validation in words.
pub fn describe(cfg: &TrainConfig, v: &Validation) -> String {
    let mut s = format!(
        "val loss {:.5} (JSD {:.5}), accuracy {:.4} -> {:.4}",
        v.loss, v.jsd, v.original_accuracy, v.accuracy
    );
    if cfg.requirement == Requirement::Fairness {
        s += &format!(
            ", {:?} gap {:.4} -> {:.4} after the search, compliant {:.0}%",
            cfg.gap,
            v.original_gap,
            v.searched_gap,
            100.0 * v.compliant
        );
    }
    s
}

/// `train` with a progress bar on stderr (hidden when quiet or in JSON mode) and, with
/// `--verbose` or where stderr is not a terminal, a line per validation.
pub fn train_with_progress(
    p: &Printer,
    dev: &Device,
    trainer: &Trainer,
    manifest: &Manifest,
    out: &std::path::Path,
    resume: bool,
) -> Result<Validation> {
    let cfg = &trainer.cfg;
    let bar = if p.quiet || p.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(cfg.steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
        )
        .unwrap(),
    );
    let (mut ema, mut val_msg) = (None::<f64>, String::new());
    let (mut since_sum, mut since_n) = (0.0f64, 0usize);
    let t0 = std::time::Instant::now();
    let best = train(dev, trainer, manifest, out, resume, &mut |e| match e {
        Event::Step { step, loss } => {
            let m = ema.map_or(loss, |m| 0.95 * m + 0.05 * loss);
            ema = Some(m);
            since_sum += loss;
            since_n += 1;
            bar.set_position(step as u64);
            bar.set_message(format!("loss {m:.5}  {val_msg}"));
        }
        Event::StepSearch(found) => {
            bar.suspend(|| p.status(&decided("step search on the training rows", found)));
        }
        Event::ResolveMask(found) => {
            let what = "the editor's mask with its kept weights re-solved";
            bar.suspend(|| p.status(&decided(what, found)));
        }
        Event::NaturalStep(found) => {
            let what = "a natural step on the labels after the edit";
            bar.suspend(|| p.status(&decided(what, found)));
        }
        Event::Validated(v, better) => {
            val_msg = format!("val {:.5}{}", v.loss, if better { " *" } else { "" });
            // Before the first step there is no training loss to report.
            let line = match since_n {
                0 => describe(cfg, v),
                n => format!(
                    "train loss {:.5}, {}",
                    since_sum / n as f64,
                    describe(cfg, v)
                ),
            };
            (since_sum, since_n) = (0.0, 0);
            bar.suspend(|| p.detail(&format!("step {}: {line}", v.step)));
            // With --verbose the line above already says it.
            if !p.verbose {
                p.progress_line(&format!(
                    "step {}/{} ({}): {line}",
                    v.step,
                    cfg.steps,
                    indicatif::HumanDuration(t0.elapsed())
                ));
            }
        }
    })?;
    bar.finish_and_clear();
    Ok(best)
}

/// The line `train` prints for a choice it made on its validation models.
fn decided(what: &str, found: &Decided) -> String {
    format!(
        "{what}: {:+.4} accuracy ({:.4} with it) on the validation split over {} validation models: {}",
        found.gain,
        found.with_it,
        found.models,
        if found.on { "on" } else { "off" }
    )
}
