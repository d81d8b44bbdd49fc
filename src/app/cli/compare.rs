//! `regop compare --zoo DIR --requirement minimise|prune`: every baseline on the zoo's held-out
//! test models, timed on one device, with utility (test accuracy, agreement with the original)
//! and requirement satisfaction; writes results.json, report.md and SVG plots.

use super::data::DataArgs;
use super::{Global, Printer};
use crate::app::report::{median, scatter_svg, Series};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::loaders::load;
use crate::io::model::Model;
use crate::networks::mlp::{predict, MlpShape};
use crate::requirement::metrics::{accuracy, decisions};
use crate::requirement::metrics::{demographic_parity_difference, equalized_odds_difference};
pub use crate::requirement::Requirement;
use crate::requirement::{Ask, FairTarget};
use crate::workflows::baselines::*;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::edit_models;
use crate::workflows::edit::search::{lambda_grid, search_lambda, search_shift};
use crate::workflows::fit::FitModel;
use crate::workflows::zoo::{read_manifest, ModelSplit};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The zoo directory (its test models are compared).
    #[arg(long)]
    pub zoo: PathBuf,
    #[arg(long, value_enum)]
    pub requirement: Requirement,
    /// Features to remove (minimise), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Target weight sparsity (prune); several, comma-separated, trace each method's front.
    #[arg(long, value_delimiter = ',', default_value = "0.9")]
    pub sparsity: Vec<f64>,
    /// Fairness gap to close (fairness).
    #[arg(long, value_enum, default_value = "eo")]
    pub gap: Gap,
    /// Largest acceptable gap on the test split (fairness).
    #[arg(long, default_value_t = 0.05)]
    pub max_gap: f64,
    /// Penalty weights swept by the fairness-penalised fine-tuning.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub lambdas: Vec<f32>,
    /// Epochs of fine-tuning for the fine-tuning baselines (per round for iterative pruning).
    #[arg(long, default_value_t = 2)]
    pub ft_epochs: usize,
    /// A trained editor (from `regop train`) to compare with the baselines as one more method.
    #[arg(long)]
    pub editor: Option<PathBuf>,
    /// Compare at most this many test models.
    #[arg(long)]
    pub max_models: Option<usize>,
    /// Output directory (default: ZOO/compare-REQUIREMENT).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

fn gap_name(g: Gap) -> &'static str {
    match g {
        Gap::Eo => "EO",
        Gap::Dp => "DP",
    }
}

/// A named baseline: a closure from the model it captured to the edited parameters.
type Method<'a> = (String, Option<f64>, Box<dyn Fn() -> Result<Vec<f32>> + 'a>);

#[derive(serde::Serialize, Clone)]
struct Row {
    model: usize,
    method: String,
    /// The method's target where it has one (prune: the asked sparsity).
    setting: Option<f64>,
    seconds: f64,
    accuracy: f64,
    original_accuracy: f64,
    agreement: f64,
    /// minimise: largest first-layer column norm among removed columns (0 = provably unused);
    /// prune: achieved weight sparsity.
    requirement_value: f64,
    satisfied: bool,
}

#[derive(serde::Serialize)]
struct Summary {
    method: String,
    models: usize,
    median_accuracy: f64,
    median_accuracy_drop: f64,
    median_agreement: f64,
    median_seconds: f64,
    satisfied: f64,
    /// Share of models that meet the requirement with an accuracy drop of at most 2 points.
    compliant: f64,
}

/// The editor against a baseline its requirement is judged by: how much of the gap between
/// the trivial edit and the reference its median accuracy recovers, and how many times faster
/// one edit is than one reference run on the same model (median and lowest over models).
#[derive(serde::Serialize)]
struct EditorVersus {
    setting: Option<f64>,
    reference: String,
    reference_accuracy: f64,
    editor_accuracy: f64,
    /// The trivial edit and its median accuracy, where the gap is defined.
    trivial: Option<(String, f64)>,
    gap_recovered: Option<f64>,
    speedup_median: f64,
    speedup_lowest: f64,
}

/// `EditorVersus` for the rows at `setting`: the editor's rows against those `reference` picks
/// (per model the fastest of them, when several methods qualify, as the fair fine-tunings at
/// each lambda do), with the gap from `trivial` where given. None without editor or reference
/// rows.
fn editor_versus(
    rows: &[Row],
    setting: Option<f64>,
    reference: (&str, &dyn Fn(&str) -> bool),
    trivial: Option<&dyn Fn(&str) -> bool>,
) -> Option<EditorVersus> {
    let at = |pick: &dyn Fn(&str) -> bool| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.setting == setting && pick(&r.method))
            .collect()
    };
    let editor = at(&|m: &str| m.starts_with("editor"));
    let refs = at(reference.1);
    if editor.is_empty() || refs.is_empty() {
        return None;
    }
    let acc = |rs: &[&Row]| median(&rs.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let ratios: Vec<f64> = editor
        .iter()
        .filter_map(|e| {
            let fastest = refs
                .iter()
                .filter(|r| r.model == e.model)
                .map(|r| r.seconds)
                .reduce(f64::min)?;
            Some(fastest / e.seconds.max(1e-9))
        })
        .collect();
    let (editor_accuracy, reference_accuracy) = (acc(&editor), acc(&refs));
    let trivial = trivial.and_then(|pick| {
        let rs = at(pick);
        Some((rs.first()?.method.clone(), acc(&rs)))
    });
    Some(EditorVersus {
        setting,
        reference: reference.0.to_string(),
        reference_accuracy,
        editor_accuracy,
        gap_recovered: trivial
            .as_ref()
            .map(|(_, t)| (editor_accuracy - t) / (reference_accuracy - t)),
        trivial,
        speedup_median: median(&ratios),
        speedup_lowest: ratios.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// What the editor is judged by, per requirement: minimisation against zeroing and retraining
/// (and zero + fine-tune for speed), pruning against global magnitude and magnitude +
/// fine-tune at each sparsity, fairness against one fair fine-tuning.
fn editor_findings(req: Requirement, rows: &[Row], sparsities: &[f64]) -> Vec<EditorVersus> {
    let is = |name: &'static str| move |m: &str| m == name;
    match req {
        Requirement::Minimise => [
            editor_versus(
                rows,
                None,
                ("retrain without", &is("retrain without")),
                Some(&is("zero columns")),
            ),
            editor_versus(
                rows,
                None,
                ("zero + fine-tune", &|m: &str| {
                    m.starts_with("zero + fine-tune")
                }),
                None,
            ),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Requirement::Prune => sparsities
            .iter()
            .filter_map(|&sp| {
                editor_versus(
                    rows,
                    Some(sp),
                    (
                        "global magnitude + fine-tune",
                        &is("global magnitude + fine-tune"),
                    ),
                    Some(&is("global magnitude")),
                )
            })
            .collect(),
        Requirement::Fairness => editor_versus(
            rows,
            None,
            ("fair fine-tune (the fastest lambda)", &|m: &str| {
                m.starts_with("fair fine-tune")
            }),
            None,
        )
        .into_iter()
        .collect(),
    }
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let manifest = read_manifest(&a.zoo)?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.zoo
            .join(format!("compare-{:?}", a.requirement).to_lowercase())
    });
    match a.requirement {
        Requirement::Minimise if a.drop.is_empty() => {
            return Err(Error::Usage(
                "--requirement minimise needs --drop FEATURE[,FEATURE]".into(),
            ))
        }
        Requirement::Prune if a.sparsity.iter().any(|s| !(0.0..1.0).contains(s)) => {
            return Err(Error::Usage("--sparsity must be in [0, 1)".into()))
        }
        _ => {}
    }
    if a.requirement == Requirement::Minimise {
        manifest
            .schema
            .features_named(&a.drop)
            .map_err(|m| Error::Usage(format!("--drop: {m}")))?;
    }
    if out.join("results.json").exists() && !a.force {
        return Err(Error::input(
            &out,
            "already holds results (pass --force to replace them)",
        ));
    }
    let data = load(
        manifest.loader,
        a.data.data.as_deref(),
        &manifest.data_options,
        manifest.data_seed,
    )?;
    if data.schema != manifest.schema {
        return Err(Error::input(
            &a.zoo,
            "the data given does not reproduce the zoo's schema (different files or options)",
        ));
    }
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let editor = match &a.editor {
        None => None,
        Some(path) => {
            let ef = EditorFile::load(&dev, path)?;
            if ef.spec.requirement != a.requirement {
                return Err(Error::input(
                    path,
                    format!(
                        "edits for {:?}, not {:?}",
                        ef.spec.requirement, a.requirement
                    ),
                ));
            }
            if ef.schema != data.schema {
                return Err(Error::input(
                    path,
                    "was trained on other data than this zoo's",
                ));
            }
            Some(ef)
        }
    };
    let columns = crate::requirement::Columns::of(&data.schema, &data.train);
    let mut tests: Vec<_> = manifest
        .models
        .iter()
        .filter(|r| r.split == ModelSplit::Test)
        .collect();
    if let Some(m) = a.max_models {
        tests.truncate(m);
    }
    if tests.is_empty() {
        return Err(Error::input(&a.zoo, "has no test models"));
    }
    p.status(&format!(
        "{} test models, requirement {:?}",
        tests.len(),
        a.requirement
    ));
    let split = &data.test;
    let mut rows: Vec<Row> = Vec::new();
    for (k, rec) in tests.iter().enumerate() {
        let model = Model::load(&a.zoo.join(&rec.file))?;
        let shape: MlpShape = model.shape();
        let params = model.flat_params();
        let base = decisions(&predict(&dev, &shape, 1, &params, &split.x)?);
        let orig_acc = accuracy(&split.y, &base);
        let ft = FineTune {
            epochs: a.ft_epochs,
            lr: rec.lr,
            weight_decay: rec.weight_decay,
            batch_size: rec.batch_size,
            seed: rec.seed ^ 0xf1e,
        };
        // The removed features' columns (minimise): built once per model, used by the baselines
        // and by the check of their results.
        let drop = match a.requirement {
            Requirement::Minimise => {
                drop_mask(&shape, &data.schema, &a.drop).map_err(Error::Usage)?
            }
            _ => Vec::new(),
        };
        let mut methods: Vec<Method> = Vec::new();
        match a.requirement {
            Requirement::Minimise => {
                let mask = &drop;
                let (pp, m1, m2, m3) = (params.clone(), mask.clone(), mask.clone(), mask.clone());
                let (dv, dt, sh) = (&dev, &data, shape.clone());
                let fm = FitModel {
                    seed: rec.seed,
                    lr: rec.lr,
                    weight_decay: rec.weight_decay,
                    epochs: rec.epochs,
                };
                let (pp2, sh2) = (params.clone(), shape.clone());
                methods.push((
                    "zero columns".into(),
                    None,
                    Box::new(move || Ok(apply(&pp, &m1))),
                ));
                let (pp3, sh3, cols) = (params.clone(), shape.clone(), &columns);
                let removed = crate::requirement::removed_columns(&data.schema, &a.drop)
                    .map_err(Error::Usage)?;
                methods.push((
                    "zero columns + mean fold".into(),
                    None,
                    Box::new(move || {
                        let folded = crate::workflows::baselines::fold_removed_means(
                            &sh3,
                            &pp3,
                            &removed,
                            &cols.means,
                        );
                        Ok(apply(&folded, mask))
                    }),
                ));
                methods.push((
                    format!("zero + fine-tune ({} ep)", a.ft_epochs),
                    None,
                    Box::new(move || masked_finetune(dv, &sh, &apply(&pp2, &m2), &m2, dt, &ft)),
                ));
                methods.push((
                    "retrain without".into(),
                    None,
                    Box::new(move || retrain(dv, &sh2, &m3, dt, &fm, rec.batch_size)),
                ));
            }
            Requirement::Prune => {
                let (dv, dt) = (&dev, &data);
                for &s in &a.sparsity {
                    type MaskFn = fn(&MlpShape, &[f32], f64) -> Vec<f32>;
                    let masks: [(&str, MaskFn, bool); 6] = [
                        ("global magnitude", global_magnitude_mask, false),
                        ("global magnitude + fine-tune", global_magnitude_mask, true),
                        ("layer-wise magnitude", layerwise_magnitude_mask, false),
                        (
                            "layer-wise magnitude + fine-tune",
                            layerwise_magnitude_mask,
                            true,
                        ),
                        ("LAMP", lamp_mask, false),
                        ("LAMP + fine-tune", lamp_mask, true),
                    ];
                    for (name, mask_of, tune) in masks {
                        let (pp, sh) = (params.clone(), shape.clone());
                        methods.push((
                            name.into(),
                            Some(s),
                            Box::new(move || {
                                let mask = mask_of(&sh, &pp, s);
                                let pruned = apply(&pp, &mask);
                                if tune {
                                    masked_finetune(dv, &sh, &pruned, &mask, dt, &ft)
                                } else {
                                    Ok(pruned)
                                }
                            }),
                        ));
                    }
                    let (pp, sh) = (params.clone(), shape.clone());
                    methods.push((
                        "iterative magnitude (3 rounds)".into(),
                        Some(s),
                        Box::new(move || iterative_magnitude(dv, &sh, &pp, s, 3, dt, &ft)),
                    ));
                }
            }
            Requirement::Fairness => {
                // One fine-tuning per lambda; each is its own method so the sweep traces a front.
                let (dv, dt) = (&dev, &data);
                for &lam in &a.lambdas {
                    let (pp, sh, gap) = (params.clone(), shape.clone(), a.gap);
                    methods.push((
                        format!("fair fine-tune lambda={lam}"),
                        None,
                        Box::new(move || {
                            Ok(fair_finetune(dv, &sh, &pp, dt, &ft, gap, &[lam])?.remove(0))
                        }),
                    ));
                }
            }
        }
        if let Some(ef) = &editor {
            let (dv, sh, pp, schema) = (&dev, shape.clone(), params.clone(), &data.schema);
            let edit_one = move |ask: Ask| -> Result<Vec<f32>> {
                Ok(
                    edit_models(dv, &ef.editor, &ef.spec, &[(&sh, &pp)], &[ask], &ef.columns)?
                        .remove(0),
                )
            };
            match a.requirement {
                Requirement::Minimise => {
                    let removed = crate::requirement::removed_columns(schema, &a.drop)
                        .map_err(Error::Usage)?;
                    let e = edit_one.clone();
                    methods.push((
                        "editor (one inference)".into(),
                        None,
                        Box::new(move || {
                            e(Ask {
                                removed: removed.clone(),
                                ..Ask::new(schema.n_columns())
                            })
                        }),
                    ));
                }
                Requirement::Prune => {
                    for &sp in &a.sparsity {
                        let e = edit_one.clone();
                        methods.push((
                            "editor (one inference)".into(),
                            Some(sp),
                            Box::new(move || {
                                e(Ask {
                                    sparsity: sp as f32,
                                    ..Ask::new(schema.n_columns())
                                })
                            }),
                        ));
                    }
                }
                Requirement::Fairness if ef.spec.fair_target == FairTarget::Shift => {
                    let (sh, pp, dt, gap, bound) =
                        (shape.clone(), params.clone(), &data, a.gap, a.max_gap);
                    methods.push((
                        "editor (group shifts picked on val, one inference)".into(),
                        None,
                        Box::new(move || {
                            Ok(search_shift(
                                dv,
                                &ef.editor,
                                &ef.spec,
                                &ef.columns,
                                &ef.schema,
                                (&sh, &pp),
                                &dt.val,
                                gap,
                                bound,
                            )?
                            .1)
                        }),
                    ));
                }
                Requirement::Fairness => {
                    let (sh, pp, dt, gap, bound) =
                        (shape.clone(), params.clone(), &data, a.gap, a.max_gap);
                    let grid = lambda_grid(ef.lambda);
                    methods.push((
                        "editor (16 lambdas in one batch, picked on val)".into(),
                        None,
                        Box::new(move || {
                            Ok(search_lambda(dv, ef, &sh, &pp, &dt.val, gap, bound, &grid)?.1)
                        }),
                    ));
                }
            }
        }
        for (name, setting, method) in &methods {
            let t0 = Instant::now();
            let edited = method()?;
            dev.sync()?;
            let seconds = t0.elapsed().as_secs_f64();
            let pred = decisions(&predict(&dev, &shape, 1, &edited, &split.x)?);
            let (value, satisfied) = match a.requirement {
                Requirement::Minimise => {
                    let v = edited
                        .iter()
                        .zip(&drop)
                        .filter(|(_, m)| **m == 0.0)
                        .map(|(w, _)| w.abs() as f64)
                        .fold(0.0, f64::max);
                    (v, v == 0.0)
                }
                Requirement::Prune => {
                    let s = weight_sparsity(&shape, &edited);
                    let n = (0..shape.layers())
                        .map(|l| shape.fan_in(l) * shape.fan_out(l))
                        .sum::<usize>() as f64;
                    (
                        s,
                        s + 0.5 / n >= setting.expect("prune methods carry their sparsity"),
                    )
                }
                Requirement::Fairness => {
                    let v = match a.gap {
                        Gap::Eo => equalized_odds_difference(&split.y, &pred, &split.group),
                        Gap::Dp => demographic_parity_difference(&pred, &split.group),
                    };
                    (v, v <= a.max_gap)
                }
            };
            rows.push(Row {
                model: rec.id,
                method: name.clone(),
                setting: *setting,
                seconds,
                accuracy: accuracy(&split.y, &pred),
                original_accuracy: orig_acc,
                agreement: accuracy(&base, &pred),
                requirement_value: value,
                satisfied,
            });
        }
        if a.requirement == Requirement::Fairness {
            // Threshold post-processing on the unchanged model's scores: fitted on validation.
            let t0 = Instant::now();
            let val_scores = predict(&dev, &shape, 1, &params, &data.val.x)?;
            let groups = data.schema.groups.len();
            let rule = match a.gap {
                Gap::Eo => crate::workflows::postprocess::fit_equalized_odds(
                    &val_scores,
                    &data.val.y,
                    &data.val.group,
                    groups,
                    rec.seed,
                ),
                Gap::Dp => crate::workflows::postprocess::fit_demographic_parity(
                    &val_scores,
                    &data.val.group,
                    groups,
                    rec.seed,
                ),
            };
            let test_scores = predict(&dev, &shape, 1, &params, &split.x)?;
            let pred = rule.apply(&test_scores, &split.group);
            let seconds = t0.elapsed().as_secs_f64();
            let v = match a.gap {
                Gap::Eo => equalized_odds_difference(&split.y, &pred, &split.group),
                Gap::Dp => demographic_parity_difference(&pred, &split.group),
            };
            let method = "threshold post-processing (needs the attribute; randomises)".to_string();
            rows.push(Row {
                model: rec.id,
                method,
                setting: None,
                seconds,
                accuracy: accuracy(&split.y, &pred),
                original_accuracy: orig_acc,
                agreement: accuracy(&base, &pred),
                requirement_value: v,
                satisfied: v <= a.max_gap,
            });
            // The unedited model as the reference point of the front.
            let v = match a.gap {
                Gap::Eo => equalized_odds_difference(&split.y, &base, &split.group),
                Gap::Dp => demographic_parity_difference(&base, &split.group),
            };
            let row = Row {
                model: rec.id,
                method: "original (no edit)".into(),
                setting: None,
                seconds: 0.0,
                accuracy: orig_acc,
                original_accuracy: orig_acc,
                agreement: 1.0,
                requirement_value: v,
                satisfied: v <= a.max_gap,
            };
            rows.push(row);
        }
        p.status(&format!(
            "  model {} ({}/{}) done",
            rec.id,
            k + 1,
            tests.len()
        ));
    }

    // Summary per method, in the order the methods ran.
    // A method at a setting ("global magnitude @ sparsity 0.9") is one line of the summary.
    let label = |r: &Row| match r.setting {
        Some(v) => format!("{} @ sparsity {v}", r.method),
        None => r.method.clone(),
    };
    let mut order: Vec<String> = Vec::new();
    for r in &rows {
        if !order.contains(&label(r)) {
            order.push(label(r));
        }
    }
    let summary: Vec<Summary> = order
        .iter()
        .map(|m| {
            let rs: Vec<&Row> = rows.iter().filter(|r| &label(r) == m).collect();
            let f = |g: &dyn Fn(&Row) -> f64| rs.iter().map(|r| g(r)).collect::<Vec<_>>();
            Summary {
                method: m.clone(),
                models: rs.len(),
                median_accuracy: median(&f(&|r| r.accuracy)),
                median_accuracy_drop: median(&f(&|r| r.original_accuracy - r.accuracy)),
                median_agreement: median(&f(&|r| r.agreement)),
                median_seconds: median(&f(&|r| r.seconds)),
                satisfied: rs.iter().filter(|r| r.satisfied).count() as f64 / rs.len() as f64,
                compliant: rs
                    .iter()
                    .filter(|r| {
                        r.satisfied
                            && r.original_accuracy - r.accuracy <= crate::requirement::MAX_DROP
                    })
                    .count() as f64
                    / rs.len() as f64,
            }
        })
        .collect();

    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let settings = match a.requirement {
        Requirement::Minimise => format!("remove {}", a.drop.join(", ")),
        Requirement::Prune => format!(
            "sparsity {}",
            a.sparsity
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Requirement::Fairness => format!(
            "{} difference <= {} on '{}'",
            gap_name(a.gap),
            a.max_gap,
            data.schema.sensitive.clone().unwrap_or_default()
        ),
    };
    let findings = editor_findings(a.requirement, &rows, &a.sparsity);
    let results = serde_json::json!({
        "zoo": a.zoo, "dataset": manifest.dataset, "device": dev.name(), "requirement": a.requirement,
        "settings": settings, "fine_tune_epochs": a.ft_epochs, "test_models": tests.len(),
        "summary": summary, "editor_versus": findings, "rows": rows,
    });
    crate::io::write_atomic(
        &out.join("results.json"),
        &serde_json::to_vec_pretty(&results).unwrap(),
        true,
    )?;
    let series = |f: &dyn Fn(&Row) -> (f64, f64)| -> Vec<Series> {
        order
            .iter()
            .map(|m| Series {
                name: m.clone(),
                points: rows.iter().filter(|r| &label(r) == m).map(f).collect(),
                connect: false,
            })
            .collect()
    };
    let title = format!(
        "{}: {settings} ({} test models)",
        manifest.dataset,
        tests.len()
    );
    crate::io::write_atomic(
        &out.join("accuracy_vs_time.svg"),
        scatter_svg(
            &title,
            "seconds per edit (log scale)",
            "test accuracy",
            true,
            &series(&|r| (r.seconds.max(1e-6), r.accuracy)),
        )
        .as_bytes(),
        true,
    )?;
    if a.requirement == Requirement::Prune && a.sparsity.len() > 1 {
        // Each method's front: median accuracy at every asked sparsity.
        let mut methods: Vec<String> = Vec::new();
        for r in &rows {
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
        }
        let front: Vec<Series> = methods
            .iter()
            .map(|m| {
                let mut pts: Vec<(f64, f64)> = a
                    .sparsity
                    .iter()
                    .map(|&sp| {
                        (
                            sp,
                            median(
                                &rows
                                    .iter()
                                    .filter(|r| &r.method == m && r.setting == Some(sp))
                                    .map(|r| r.accuracy)
                                    .collect::<Vec<_>>(),
                            ),
                        )
                    })
                    .collect();
                pts.sort_by(|x, y| x.0.total_cmp(&y.0));
                Series {
                    name: m.clone(),
                    points: pts,
                    connect: true,
                }
            })
            .collect();
        crate::io::write_atomic(
            &out.join("pareto.svg"),
            scatter_svg(
                &title,
                "weight sparsity",
                "test accuracy (median)",
                false,
                &front,
            )
            .as_bytes(),
            true,
        )?;
    }
    if a.requirement == Requirement::Fairness {
        // The trade-off: each method's median (gap, accuracy) over the test models.
        let front: Vec<Series> = order
            .iter()
            .map(|m| {
                let rs: Vec<&Row> = rows.iter().filter(|r| &label(r) == m).collect();
                let med =
                    |f: &dyn Fn(&Row) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
                Series {
                    name: m.clone(),
                    points: vec![(med(&|r| r.requirement_value), med(&|r| r.accuracy))],
                    connect: false,
                }
            })
            .collect();
        let x_label = format!(
            "{} difference on the test split (median over models)",
            gap_name(a.gap)
        );
        crate::io::write_atomic(
            &out.join("pareto.svg"),
            scatter_svg(&title, &x_label, "test accuracy (median)", false, &front).as_bytes(),
            true,
        )?;
    }
    crate::io::write_atomic(
        &out.join("per_model.svg"),
        scatter_svg(
            &title,
            "original test accuracy",
            "edited test accuracy",
            false,
            &series(&|r| (r.original_accuracy, r.accuracy)),
        )
        .as_bytes(),
        true,
    )?;
    let mut md = format!("# {title}\n\nDevice: {}. Test split of the data: {} rows. Fine-tuning: {} epochs at each model's own learning rate.\n\n", dev.name(), split.rows(), a.ft_epochs);
    md += "| method | median accuracy | median drop | median agreement | median ms/edit | requirement met | compliant (met, drop <= 2 pts) |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for s in &summary {
        md += &format!(
            "| {} | {:.4} | {:+.4} | {:.4} | {:.2} | {:.0}% | {:.0}% |\n",
            s.method,
            s.median_accuracy,
            -s.median_accuracy_drop,
            s.median_agreement,
            1e3 * s.median_seconds,
            100.0 * s.satisfied,
            100.0 * s.compliant
        );
    }
    if !findings.is_empty() {
        md += "\nThe editor against its references (gap recovered: how far the editor's median accuracy goes from the trivial edit's to the reference's; speed-up: one reference run's time over one edit's, per model, same device):\n\n| reference | setting | gap recovered | speed-up, median | speed-up, lowest |\n|---|---|---:|---:|---:|\n";
        for f in &findings {
            let gap = match (&f.trivial, f.gap_recovered) {
                (Some((name, t)), Some(g)) => format!(
                    "{:.0}% ({name} {t:.4} -> editor {:.4}; reference {:.4})",
                    100.0 * g,
                    f.editor_accuracy,
                    f.reference_accuracy
                ),
                _ => "-".into(),
            };
            md += &format!(
                "| {} | {} | {gap} | {:.1}x | {:.1}x |\n",
                f.reference,
                f.setting.map_or("-".into(), |s| format!("sparsity {s}")),
                f.speedup_median,
                f.speedup_lowest
            );
        }
    }
    md += match a.requirement {
        Requirement::Minimise => "\nRequirement: every first-layer weight of the removed features' input columns is exactly zero, so the model provably cannot use them.\n",
        Requirement::Prune => "\nRequirement: the asked fraction of weights (biases excluded) is exactly zero. With several sparsities, pareto.svg shows each method's accuracy against sparsity.\n",
        Requirement::Fairness => "\nRequirement: the fairness difference (Fairlearn's definition, hard decisions) on the test split is at most the stated bound. Each lambda of the penalised fine-tuning is one point of its trade-off; see pareto.svg. Threshold post-processing (Hardt et al.) leaves the network unchanged and adds group-specific thresholds fitted on the validation split: it needs the sensitive attribute at prediction time as a separate input and, for equalised odds, randomises its decisions; an edited network needs neither. Its time is fitting plus predicting the test split. A shift editor picks deterministic group thresholds on the validation split from the original's logits and folds them into the weights in one inference; its time includes that choice.\n\n![accuracy against fairness gap](pareto.svg)\n",
    };
    md += "\n![accuracy against time per edit](accuracy_vs_time.svg)\n\n![per-model accuracy before and after](per_model.svg)\n";
    crate::io::write_atomic(&out.join("report.md"), md.as_bytes(), true)?;
    if p.json {
        p.json(&results);
    } else {
        p.result(&format!("{md}\nwritten: {}", out.display()));
    }
    Ok(0)
}
