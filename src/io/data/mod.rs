//! Tabular data: raw tables from files or the built-in generator, turned into model inputs by
//! one preprocessing path: rows with missing values dropped, label mapped to 0/1, sensitive group
//! per row, a deterministic split by seed, one-hot categoricals and standardised numerics fitted
//! on the training split only. The schema (raw feature -> its input columns, the sensitive
//! attribute, the label) travels in every model's metadata.

pub mod export;
pub mod loaders;
pub mod synthetic;

use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A table of raw string cells, as read from a file.
#[derive(Clone, Debug)]
pub struct RawTable {
    /// Where it came from, for error messages.
    pub source: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Line number in the file of each row (1-based), for error messages.
    pub lines: Vec<usize>,
}

impl RawTable {
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            Error::input(
                &self.source,
                format!(
                    "no column named '{name}' (columns: {})",
                    self.columns.join(", ")
                ),
            )
        })
    }
}

/// How a sensitive attribute splits people into groups.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SensitiveRule {
    /// One group per category of the column.
    Categories,
    /// Two groups: value < threshold, and the rest ("age<25").
    Below(f64),
}

/// What to build from a raw table.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub label: String,
    /// Label values counted as the positive class (after trimming; a trailing '.' is ignored).
    /// Empty: a multi-class label, one class per value.
    pub positive: Vec<String>,
    pub categorical: Vec<String>,
    pub drop: Vec<String>,
    /// Sensitive attribute column and how it forms groups.
    pub sensitive: Option<(String, SensitiveRule)>,
    /// Cells meaning "missing": rows holding one in a used column are dropped.
    pub missing: Vec<String>,
    /// Fractions of rows for (train, val); test gets the rest. Ignored for rows with a fixed split.
    pub split: (f64, f64),
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeatureKind {
    Numeric { mean: f64, std: f64 },
    Categorical { categories: Vec<String> },
}

/// A raw feature and the model input columns it owns: `start..start + width`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
    pub start: usize,
    pub width: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub dataset: String,
    pub features: Vec<Feature>,
    pub label: String,
    pub positive: Vec<String>,
    /// Sensitive attribute (a raw column name) and its group names, in group-index order.
    pub sensitive: Option<String>,
    pub sensitive_rule: Option<SensitiveRule>,
    pub groups: Vec<String>,
    /// A multi-class label's values, in class-index order (empty for a binary label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl Schema {
    /// The side of square images whose every feature is a pixel `pR_C` in row-major order (one
    /// column each), or None for other data.
    pub fn image_side(&self) -> Option<usize> {
        let n = self.features.len();
        let side = (n as f64).sqrt().round() as usize;
        let pixels = side * side == n
            && self.features.iter().enumerate().all(|(i, f)| {
                f.width == 1 && f.start == i && pixel(&f.name) == Some((i / side, i % side))
            });
        (pixels && side > 1).then_some(side)
    }

    /// Model outputs the label needs: 1 (a binary logit) or one per class.
    pub fn outputs(&self) -> usize {
        self.classes.len().max(1)
    }
    pub fn n_columns(&self) -> usize {
        self.features.iter().map(|f| f.width).sum()
    }
    /// One name per model input column: numerics by name, categories as "name=value".
    pub fn column_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.features {
            match &f.kind {
                FeatureKind::Numeric { .. } => out.push(f.name.clone()),
                FeatureKind::Categorical { categories } => {
                    out.extend(categories.iter().map(|c| format!("{}={c}", f.name)))
                }
            }
        }
        out
    }
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }
    /// Resolve user-given feature names, naming the unknown ones and listing the known ones.
    /// On image data a name may be a rectangle of pixels, `pR0-R1_C0-C1` (rows R0..=R1,
    /// columns C0..=C1 of pixels named `pR_C`).
    pub fn features_named(&self, names: &[String]) -> std::result::Result<Vec<&Feature>, String> {
        let mut out = Vec::new();
        for n in names {
            if let Some(((r0, r1), (c0, c1))) = pixel_region(n) {
                let inside: Vec<&Feature> = self
                    .features
                    .iter()
                    .filter(|f| {
                        pixel(&f.name)
                            .is_some_and(|(r, c)| (r0..=r1).contains(&r) && (c0..=c1).contains(&c))
                    })
                    .collect();
                if inside.is_empty() {
                    return Err(format!("pixel region '{n}' holds no pixel of the data"));
                }
                out.extend(inside);
                continue;
            }
            out.push(self.feature(n).ok_or_else(|| {
                let known: Vec<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
                let shown = if known.len() > 40 {
                    format!(
                        "{} ... ({} in all; pixels as pR_C, regions as pR0-R1_C0-C1)",
                        known[..8].join(", "),
                        known.len()
                    )
                } else {
                    known.join(", ")
                };
                format!("unknown feature '{n}' (features: {shown})")
            })?);
        }
        Ok(out)
    }
}

/// The (row, column) of a pixel feature named `pR_C`.
fn pixel(name: &str) -> Option<(usize, usize)> {
    let (r, c) = name.strip_prefix('p')?.split_once('_')?;
    Some((r.parse().ok()?, c.parse().ok()?))
}

/// The row and column ranges of a pixel region named `pR0-R1_C0-C1`.
fn pixel_region(name: &str) -> Option<((usize, usize), (usize, usize))> {
    let (rows, cols) = name.strip_prefix('p')?.split_once('_')?;
    let range = |s: &str| -> Option<(usize, usize)> {
        let (a, b) = s.split_once('-')?;
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        (a <= b).then_some((a, b))
    };
    Some((range(rows)?, range(cols)?))
}

/// Rows of one split: inputs [rows, columns], labels 0/1, sensitive group index per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub group: Vec<u32>,
}

/// What a least-squares prediction of some columns from the others needs of a split's rows,
/// computed once: each column's mean, X^T X of the centred columns [columns, columns], and the
/// ridge that keeps the prediction from fitting noise (`ridge`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColumnMoments {
    /// Rows the moments are of.
    pub rows: usize,
    pub mean: Vec<f64>,
    pub gram: Vec<f64>,
    /// Every fifth row held out: the Gram matrix of the other rows about their mean, and the
    /// held-out rows' second moments about that mean (empty when the split is too small).
    held_out: Option<(Vec<f64>, Vec<f64>)>,
    ridge: std::sync::OnceLock<f64>,
    /// Least-squares fold coefficients already solved (`ColumnMoments::fold_coefficients`).
    folds: SolveCache<Vec<bool>>,
    /// Input factors already factorised (`ColumnMoments::input_factor`), by removed columns
    /// and the dampening's bits.
    factors: SolveCache<(Vec<bool>, u64)>,
}

/// Most solves of each kind kept at once: training draws a new set of removed columns at every
/// ask, and on 784 pixels one set's fold coefficients take a megabyte.
const SOLVES_KEPT: usize = 16;

/// Solves from the moments by set of removed columns. They depend on the data alone, so every
/// model that removes the same columns shares one. A cache, not part of the moments' value: a
/// clone starts empty and any two compare equal.
#[derive(Debug)]
struct SolveCache<K>(std::sync::Mutex<std::collections::HashMap<K, Arc<Vec<f64>>>>);

impl<K: std::hash::Hash + Eq + Clone> SolveCache<K> {
    /// The solve kept for `key`, or `solve()` made and kept (the last `SOLVES_KEPT`).
    fn get_or(&self, key: &K, solve: impl FnOnce() -> Vec<f64>) -> Arc<Vec<f64>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = kept.get(key) {
            return a.clone();
        }
        drop(kept);
        let a = Arc::new(solve());
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= SOLVES_KEPT {
            kept.clear();
        }
        kept.insert(key.clone(), a.clone());
        a
    }
}

impl<K> Default for SolveCache<K> {
    fn default() -> Self {
        SolveCache(Default::default())
    }
}

impl<K> Clone for SolveCache<K> {
    fn clone(&self) -> Self {
        SolveCache::default()
    }
}

impl<K> PartialEq for SolveCache<K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Held-out rows a ridge choice needs; with fewer, folds use the smallest ridge.
const MIN_HELD_OUT_ROWS: usize = 20;

impl ColumnMoments {
    /// The ridge of least-squares predictions from these columns, as a share of the Gram
    /// matrix's mean diagonal: the grid point whose predictions of each column from all the
    /// others, fitted on four rows in five, are closest on the fifth (`linalg::held_out_ridge`).
    /// With many rows per column it is tiny; with few (784 pixels on 3,500 rows) a plain
    /// solve fits noise that new rows do not share. Chosen on first use, then kept.
    pub fn ridge(&self) -> f64 {
        *self.ridge.get_or_init(|| match &self.held_out {
            Some((fit, held)) => crate::engine::linalg::held_out_ridge(fit, held, self.mean.len()),
            None => crate::engine::linalg::RIDGE_GRID[0],
        })
    }

    /// The least-squares prediction of the `removed` columns from the kept ones: A^T [removed,
    /// kept], with (Xk^T Xk + ridge) A = Xk^T Xr on the centred columns (each removed column's
    /// coefficients contiguous). Solved once per set of removed columns.
    pub fn fold_coefficients(&self, removed: &[bool]) -> Arc<Vec<f64>> {
        self.folds
            .get_or(&removed.to_vec(), || self.solve_fold(removed))
    }

    /// The lower Cholesky factor of the second moments of the columns not `removed` and a
    /// column of ones (last), [m, m], dampened by `damp` of their mean diagonal: the first
    /// layer's input factor of a natural-gradient step (`baselines::natural_step`). Factorised
    /// once per set of removed columns.
    pub fn input_factor(&self, removed: &[bool], damp: f64) -> Arc<Vec<f64>> {
        use crate::engine::linalg;
        self.factors
            .get_or(&(removed.to_vec(), damp.to_bits()), || {
                let d = self.mean.len();
                let read: Vec<usize> = (0..d)
                    .filter(|&c| !removed.get(c).copied().unwrap_or(false))
                    .collect();
                let (m, n) = (read.len() + 1, self.rows.max(1) as f64);
                let mut a = vec![0.0f64; m * m];
                for (i, &ci) in read.iter().enumerate() {
                    for (j, &cj) in read.iter().enumerate() {
                        a[i * m + j] = self.gram[ci * d + cj] / n + self.mean[ci] * self.mean[cj];
                    }
                    a[i * m + m - 1] = self.mean[ci];
                    a[(m - 1) * m + i] = self.mean[ci];
                }
                a[m * m - 1] = 1.0;
                linalg::dampen(&mut a, m, damp);
                linalg::cholesky(&a, m).expect("dampened second moments are positive definite")
            })
    }

    fn solve_fold(&self, removed: &[bool]) -> Vec<f64> {
        use crate::engine::linalg;
        let d = self.mean.len();
        let kept: Vec<usize> = (0..d).filter(|&c| !removed[c]).collect();
        let gone: Vec<usize> = (0..d).filter(|&c| removed[c]).collect();
        let (nk, nr, full) = (kept.len(), gone.len(), &self.gram);
        let mut a: Vec<f64> = kept
            .iter()
            .flat_map(|&i| gone.iter().map(move |&j| full[i * d + j]))
            .collect();
        if nk > 0 && nr > 0 {
            let mut g: Vec<f64> = kept
                .iter()
                .flat_map(|&i| kept.iter().map(move |&j| full[i * d + j]))
                .collect();
            linalg::dampen(&mut g, nk, self.ridge());
            let chol = linalg::cholesky(&g, nk).expect("dampened Gram matrix is positive definite");
            linalg::cholesky_solve(&chol, nk, &mut a, nr);
        }
        (0..nr)
            .flat_map(|j| (0..nk).map(move |i| (i, j)))
            .map(|(i, j)| a[i * nr + j])
            .collect()
    }
}

/// Rows of a calibration batch: what the data-aware rules and editors read of the training
/// split (no labels), the usual few hundred.
pub const CALIBRATION_ROWS: usize = 512;

impl Split {
    pub fn rows(&self) -> usize {
        self.y.len()
    }
    /// A calibration batch: `rows` rows drawn without replacement (every row when there are
    /// fewer), the same for every model and every call.
    pub fn calibration_batch(&self, rows: usize) -> Split {
        let d = self.x.len() / self.rows().max(1);
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0xca1b));
        order.truncate(rows);
        order.sort_unstable();
        Split {
            x: order
                .iter()
                .flat_map(|&r| self.x[r * d..(r + 1) * d].iter().copied())
                .collect(),
            y: order.iter().map(|&r| self.y[r]).collect(),
            group: order.iter().map(|&r| self.group[r]).collect(),
        }
    }
    /// The columns' means and the Gram matrix of the centred columns, with what choosing
    /// their ridge needs (`ColumnMoments`).
    pub fn moments(&self) -> ColumnMoments {
        let rows = self.rows();
        let d = self.x.len() / rows.max(1);
        let mean: Vec<f64> = (0..d)
            .map(|c| (0..rows).map(|r| self.x[r * d + c] as f64).sum::<f64>() / rows.max(1) as f64)
            .collect();
        let centred: Vec<f32> = self
            .x
            .chunks(d.max(1))
            .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (*v as f64 - m) as f32))
            .collect();
        let gram = crate::engine::linalg::gram(&centred, rows, d);
        let held: Vec<usize> = (0..rows).filter(|r| r % 5 == 4).collect();
        let held_out =
            (held.len() >= MIN_HELD_OUT_ROWS).then(|| self.held_out_moments(&held, &mean, &gram));
        ColumnMoments {
            rows,
            mean,
            gram,
            held_out,
            ridge: Default::default(),
            folds: Default::default(),
            factors: Default::default(),
        }
    }

    /// With rows `held` held out: the Gram matrix of the other rows centred on their mean, and
    /// the held rows' second moments about that mean. The other rows' sums come from the
    /// whole split's (`mean`, `gram`) less the held rows', so only the held rows are read.
    fn held_out_moments(&self, held: &[usize], mean: &[f64], gram: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = mean.len();
        let (n, nh) = (self.rows() as f64, held.len() as f64);
        let nf = n - nh;
        let rows: Vec<f32> = held
            .iter()
            .flat_map(|&r| self.x[r * d..(r + 1) * d].iter().copied())
            .collect();
        // Uncentred sums of the held rows: x x^T and x.
        let held_sq = crate::engine::linalg::gram(&rows, held.len(), d);
        let held_sum: Vec<f64> = (0..d)
            .map(|c| held.iter().map(|&r| self.x[r * d + c] as f64).sum())
            .collect();
        let fit_mean: Vec<f64> = (0..d).map(|c| (n * mean[c] - held_sum[c]) / nf).collect();
        let mut fit = vec![0.0f64; d * d];
        let mut about = vec![0.0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                let k = i * d + j;
                // The whole split's uncentred x x^T, less the held rows', centred on fit_mean.
                let all_sq = gram[k] + n * mean[i] * mean[j];
                fit[k] = all_sq - held_sq[k] - nf * fit_mean[i] * fit_mean[j];
                about[k] = held_sq[k] - held_sum[i] * fit_mean[j] - fit_mean[i] * held_sum[j]
                    + nh * fit_mean[i] * fit_mean[j];
            }
        }
        (fit, about)
    }

    pub fn positive_rate(&self) -> f64 {
        self.y.iter().map(|&v| v as f64).sum::<f64>() / self.rows().max(1) as f64
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub schema: Schema,
    pub train: Split,
    pub val: Split,
    pub test: Split,
    /// Rows read from the files, before dropping rows with missing values or filtering.
    pub raw_rows: usize,
    /// Rows dropped for missing values.
    pub dropped_missing: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// Maps a row index to its sensitive group index.
type GroupOf<'a> = Box<dyn Fn(usize) -> Result<u32> + 'a>;

/// Build a dataset from a raw table. `fixed` gives rows a predetermined part (Adult's official
/// test file); the other rows are shuffled by `seed` and split by `spec.split`.
pub fn build(
    table: &RawTable,
    spec: &Spec,
    fixed: Option<&[Option<Part>]>,
    seed: u64,
) -> Result<Dataset> {
    let label_col = table.column(&spec.label)?;
    for c in spec.categorical.iter().chain(&spec.drop) {
        table.column(c)?;
    }
    let sensitive_col = match &spec.sensitive {
        Some((name, _)) => Some(table.column(name)?),
        None => None,
    };
    let used: Vec<usize> = (0..table.columns.len())
        .filter(|&i| i != label_col && !spec.drop.contains(&table.columns[i]))
        .collect();
    if used.is_empty() {
        return Err(Error::input(&table.source, "no feature columns left"));
    }
    let (keep, dropped) = complete_rows(table, spec, &used, label_col)?;
    let classes = if spec.positive.is_empty() {
        label_values(table, &keep, label_col)
    } else {
        Vec::new()
    };
    let label_of = |r: usize| -> f32 {
        let v = table.rows[r][label_col].trim_end_matches('.');
        if classes.is_empty() {
            spec.positive.iter().any(|p| p == v) as u32 as f32
        } else {
            classes.iter().position(|c| c == v).expect("a seen value") as f32
        }
    };
    if classes.is_empty() {
        check_two_classes(table, spec, &keep, label_col, &label_of)?;
    } else if classes.len() < 2 {
        return Err(Error::input(
            &table.source,
            format!("label column '{}' holds a single value", spec.label),
        ));
    }
    let parts = split_rows(&keep, fixed, spec.split, seed);
    let train_rows: Vec<usize> = parts
        .iter()
        .filter(|p| p.1 == Part::Train)
        .map(|p| p.0)
        .collect();
    if train_rows.is_empty() {
        return Err(Error::input(&table.source, "training split is empty"));
    }
    let features = fit_features(table, spec, &used, &train_rows)?;
    let (groups, group_of) = sensitive_groups(table, spec, sensitive_col, &keep)?;

    // Encode.
    let width: usize = features.iter().map(|f| f.width).sum();
    let mut splits = [Split::default(), Split::default(), Split::default()];
    for &(r, part) in &parts {
        let s = &mut splits[part as usize];
        let base = s.x.len();
        s.x.resize(base + width, 0.0);
        encode_row(table, r, &features, &used, &mut s.x[base..])?;
        s.y.push(label_of(r));
        s.group.push(group_of(r)?);
    }
    let [train, val, test] = splits;
    let schema = Schema {
        dataset: spec.name.clone(),
        features,
        label: spec.label.clone(),
        positive: spec.positive.clone(),
        sensitive: spec.sensitive.as_ref().map(|s| s.0.clone()),
        sensitive_rule: spec.sensitive.as_ref().map(|s| s.1.clone()),
        groups,
        classes,
    };
    Ok(Dataset {
        schema,
        train,
        val,
        test,
        raw_rows: table.rows.len(),
        dropped_missing: dropped,
    })
}

/// An error on line `line` of the table's file.
fn at_line(table: &RawTable, line: usize, msg: String) -> Error {
    Error::input(&table.source, format!("line {line}: {msg}"))
}

/// The rows without a missing value in any used column or the label, and how many had one.
fn complete_rows(
    table: &RawTable,
    spec: &Spec,
    used: &[usize],
    label_col: usize,
) -> Result<(Vec<usize>, usize)> {
    let mut keep = Vec::new();
    let mut dropped = 0;
    for (r, row) in table.rows.iter().enumerate() {
        let missing = used.iter().chain(std::iter::once(&label_col)).any(|&c| {
            spec.missing
                .iter()
                .any(|m| row[c] == *m || row[c].is_empty())
        });
        if missing {
            dropped += 1;
        } else {
            keep.push(r);
        }
    }
    if keep.is_empty() {
        return Err(Error::input(
            &table.source,
            "no complete rows (every row has a missing value)",
        ));
    }
    Ok((keep, dropped))
}

/// The distinct values of a multi-class label (a trailing '.' ignored), in numeric order when
/// they are all numbers, else in text order.
fn label_values(table: &RawTable, keep: &[usize], label_col: usize) -> Vec<String> {
    let seen: std::collections::BTreeSet<&str> = keep
        .iter()
        .map(|&r| table.rows[r][label_col].trim_end_matches('.'))
        .collect();
    let mut values: Vec<String> = seen.into_iter().map(String::from).collect();
    if values.iter().all(|v| parse_num(v).is_some()) {
        values.sort_by(|a, b| parse_num(a).unwrap().total_cmp(&parse_num(b).unwrap()));
    }
    values
}

/// Refuse a label column that holds one class once `spec.positive` is applied.
fn check_two_classes(
    table: &RawTable,
    spec: &Spec,
    keep: &[usize],
    label_col: usize,
    label_of: &dyn Fn(usize) -> f32,
) -> Result<()> {
    let positives = keep.iter().filter(|&&r| label_of(r) > 0.5).count();
    if positives == 0 || positives == keep.len() {
        let seen: std::collections::BTreeSet<&str> = keep
            .iter()
            .map(|&r| table.rows[r][label_col].as_str())
            .take(1000)
            .collect();
        return Err(Error::input(
            &table.source,
            format!(
                "label column '{}' has a single class once positive = {:?} (values seen: {:?})",
                spec.label, spec.positive, seen
            ),
        ));
    }
    Ok(())
}

/// Each kept row's part: its fixed one, or by `split` fractions after a shuffle by `seed`.
fn split_rows(
    keep: &[usize],
    fixed: Option<&[Option<Part>]>,
    split: (f64, f64),
    seed: u64,
) -> Vec<(usize, Part)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a);
    let mut free: Vec<usize> = keep
        .iter()
        .copied()
        .filter(|&r| fixed.is_none_or(|f| f[r].is_none()))
        .collect();
    free.shuffle(&mut rng);
    let n = free.len() as f64;
    let (n_train, n_val) = (
        (n * split.0).round() as usize,
        (n * split.1).round() as usize,
    );
    let mut parts: Vec<(usize, Part)> = free
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let part = if i < n_train {
                Part::Train
            } else if i < n_train + n_val {
                Part::Val
            } else {
                Part::Test
            };
            (r, part)
        })
        .collect();
    if let Some(f) = fixed {
        parts.extend(keep.iter().filter_map(|&r| f[r].map(|p| (r, p))));
    }
    parts
}

/// The model input columns of every used column, fitted on the training rows only: the
/// categories seen there, or the mean and standard deviation.
fn fit_features(
    table: &RawTable,
    spec: &Spec,
    used: &[usize],
    train_rows: &[usize],
) -> Result<Vec<Feature>> {
    let mut features = Vec::new();
    let mut start = 0;
    for &c in used {
        let name = table.columns[c].clone();
        let kind = if spec.categorical.contains(&name) {
            let cats: std::collections::BTreeSet<&str> = train_rows
                .iter()
                .map(|&r| table.rows[r][c].as_str())
                .collect();
            FeatureKind::Categorical {
                categories: cats.into_iter().map(String::from).collect(),
            }
        } else {
            let mut sum = 0.0;
            let mut sq = 0.0;
            for &r in train_rows {
                let v = number(table, r, c, &name)?;
                sum += v;
                sq += v * v;
            }
            let mean = sum / train_rows.len() as f64;
            let std = (sq / train_rows.len() as f64 - mean * mean).max(0.0).sqrt();
            FeatureKind::Numeric {
                mean,
                std: if std > 1e-12 { std } else { 1.0 },
            }
        };
        let width = match &kind {
            FeatureKind::Numeric { .. } => 1,
            FeatureKind::Categorical { categories } => categories.len(),
        };
        features.push(Feature {
            name,
            kind,
            start,
            width,
        });
        start += width;
    }
    Ok(features)
}

/// A numeric cell, or an error naming its line and column.
fn number(table: &RawTable, r: usize, c: usize, name: &str) -> Result<f64> {
    parse_num(&table.rows[r][c]).ok_or_else(|| {
        at_line(
            table,
            table.lines[r],
            format!("column '{name}': '{}' is not a number (list the column in --categorical if it is a category)", table.rows[r][c]),
        )
    })
}

/// Row `r` encoded into `x` (zeroed, one value per input column): one-hot categories (a
/// category unseen in training encodes as all zeros), standardised numbers.
fn encode_row(
    table: &RawTable,
    r: usize,
    features: &[Feature],
    used: &[usize],
    x: &mut [f32],
) -> Result<()> {
    let row = &table.rows[r];
    for (f, &c) in features.iter().zip(used) {
        match &f.kind {
            FeatureKind::Numeric { mean, std } => {
                let v = number(table, r, c, &f.name)?;
                x[f.start] = ((v - mean) / std) as f32;
            }
            FeatureKind::Categorical { categories } => {
                if let Ok(i) = categories.binary_search(&row[c]) {
                    x[f.start + i] = 1.0;
                }
            }
        }
    }
    Ok(())
}

/// The sensitive attribute's group names (in group-index order) and each row's group: one per
/// category, or below/above a threshold; one group "all" without an attribute.
fn sensitive_groups<'a>(
    table: &'a RawTable,
    spec: &Spec,
    sensitive_col: Option<usize>,
    keep: &[usize],
) -> Result<(Vec<String>, GroupOf<'a>)> {
    Ok(match (&spec.sensitive, sensitive_col) {
        (Some((name, SensitiveRule::Categories)), Some(c)) => {
            let cats: std::collections::BTreeSet<&str> =
                keep.iter().map(|&r| table.rows[r][c].as_str()).collect();
            let cats: Vec<String> = cats.into_iter().map(String::from).collect();
            if cats.len() > 64 {
                return Err(Error::input(&table.source, format!("sensitive attribute '{name}' has {} distinct values; give a numeric threshold (e.g. '{name}<25')", cats.len())));
            }
            let lookup = cats.clone();
            (
                cats,
                Box::new(move |r| {
                    Ok(lookup.iter().position(|g| *g == table.rows[r][c]).unwrap() as u32)
                }),
            )
        }
        (Some((name, SensitiveRule::Below(t))), Some(c)) => {
            let (t, nm) = (*t, name.clone());
            (
                vec![format!("{name}<{t}"), format!("{name}>={t}")],
                Box::new(move |r| {
                    let v = parse_num(&table.rows[r][c]).ok_or_else(|| {
                        at_line(
                            table,
                            table.lines[r],
                            format!(
                                "sensitive column '{nm}': '{}' is not a number",
                                table.rows[r][c]
                            ),
                        )
                    })?;
                    Ok((v >= t) as u32)
                }),
            )
        }
        _ => (vec!["all".into()], Box::new(|_| Ok(0))),
    })
}

fn parse_num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Read a delimited text file into a raw table. `header`: the first line names the columns;
/// otherwise `columns` does. Lines starting with `comment` are skipped. Cells are trimmed.
pub fn read_delimited(
    path: &Path,
    delimiter: u8,
    header: bool,
    columns: Option<&[&str]>,
    comment: Option<u8>,
) -> Result<RawTable> {
    let bytes = crate::io::read(path)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(|e| Error::input(path, format!("not a valid gzip file: {e}")))?;
        out
    } else {
        bytes
    };
    parse_delimited(path, &bytes, delimiter, header, columns, comment)
}

/// `read_delimited` on bytes already read from `path` (named in errors).
pub fn parse_delimited(
    path: &Path,
    bytes: &[u8],
    delimiter: u8,
    header: bool,
    columns: Option<&[&str]>,
    comment: Option<u8>,
) -> Result<RawTable> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::input(path, "file is empty"));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(comment)
        .from_reader(bytes);
    let mut names: Option<Vec<String>> = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for rec in rdr.byte_records() {
        let rec = rec.map_err(|e| Error::input(path, format!("unreadable CSV: {e}")))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.iter().all(|c| c.is_empty()) {
            continue; // blank line
        }
        let mut cells = Vec::with_capacity(rec.len());
        for c in rec.iter() {
            cells.push(
                String::from_utf8(c.to_vec())
                    .map_err(|_| Error::input(path, format!("line {line}: not valid UTF-8")))?,
            );
        }
        match &names {
            None if header => {
                names = Some(cells);
                continue;
            }
            None => return Err(Error::input(path, "no column names")),
            Some(n) if n.len() != cells.len() => {
                return Err(Error::input(
                    path,
                    format!("line {line}: {} fields, expected {}", cells.len(), n.len()),
                ));
            }
            Some(_) => {}
        }
        rows.push(cells);
        lines.push(line);
    }
    let columns = names.ok_or_else(|| Error::input(path, "file is empty"))?;
    if rows.is_empty() {
        return Err(Error::input(path, "has a header but no rows"));
    }
    Ok(RawTable {
        source: path.to_path_buf(),
        columns,
        rows,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The held-out moments taken from the whole split's, less the held rows', equal the
    /// moments computed from each part's own rows.
    #[test]
    fn held_out_moments_are_each_parts_own() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (rows, d) = (103, 4);
        let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-2.0..3.0)).collect();
        let split = Split {
            x: x.clone(),
            y: vec![0.0; rows],
            group: vec![0; rows],
        };
        let m = split.moments();
        let (fit, about) = m.held_out.clone().expect("enough rows to hold some out");
        let part = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
            (0..rows).filter(|&r| keep(r)).collect()
        };
        let (fit_rows, held_rows) = (part(&|r| r % 5 != 4), part(&|r| r % 5 == 4));
        let fit_mean: Vec<f64> = (0..d)
            .map(|c| {
                fit_rows.iter().map(|&r| x[r * d + c] as f64).sum::<f64>() / fit_rows.len() as f64
            })
            .collect();
        let second = |which: &[usize], i: usize, j: usize| -> f64 {
            which
                .iter()
                .map(|&r| (x[r * d + i] as f64 - fit_mean[i]) * (x[r * d + j] as f64 - fit_mean[j]))
                .sum()
        };
        // The split's rows are centred in f32 before their Gram matrix: an entry is exact to a
        // few f32 roundings of the scale of its row and column (Cauchy-Schwarz), not of itself.
        let scale = |which: &[usize], i: usize, j: usize| {
            (second(which, i, i) * second(which, j, j)).sqrt().max(1.0)
        };
        for i in 0..d {
            for j in 0..d {
                let (f, h) = (second(&fit_rows, i, j), second(&held_rows, i, j));
                let (got_f, got_h) = (fit[i * d + j], about[i * d + j]);
                let tol_f = 1e-5 * scale(&fit_rows, i, j);
                assert!((got_f - f).abs() < tol_f, "fit {i},{j}: {got_f} vs {f}");
                let tol_h = 1e-5 * scale(&held_rows, i, j);
                assert!((got_h - h).abs() < tol_h, "held {i},{j}: {got_h} vs {h}");
            }
        }
    }
}
