//! The datasets regop knows by name, each read from its standard raw files, plus a generic CSV
//! loader and the built-in synthetic generator. Each returns a `RawTable` and a `Spec`; the
//! preprocessing itself is `data::build`, shared by all of them.

use super::{build, read_delimited, synthetic, Dataset, Part, RawTable, SensitiveRule, Spec};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// Built in, no files: a sensitive attribute, proxies of it, informative and noise features.
    Synthetic,
    /// UCI Adult: a directory with adult.data and adult.test (official test split kept).
    Adult,
    /// UCI Bank marketing: bank-full.csv (';') or the cleaned comma-separated copy.
    Bank,
    /// ProPublica COMPAS: compas-scores-two-years.csv, ProPublica's filter applied.
    Compas,
    /// UCI Statlog German credit: german.data (space-separated A-codes).
    German,
    /// Dutch census 2001: dutch.csv.
    Dutch,
    /// LSAC law school: law_school_clean.csv.
    LawSchool,
    /// UCI default of credit-card clients: credit-card-clients.csv.
    CreditCard,
    /// UCI optical digits (scikit-learn's copy): digits.csv.gz, 8x8 pixels 0-16, 10 classes.
    Digits,
    /// 5,000 MNIST digits: mnist_5k.csv.gz, 28x28 pixels 0-255, 10 classes.
    Mnist,
    /// Any CSV with a header: give --target, and --categorical / --sensitive / --drop as needed.
    Csv,
}

/// Rows of the built-in synthetic dataset unless `--rows` says otherwise.
pub const SYNTHETIC_ROWS: usize = 18_000;

/// Options a user may give for any dataset (overrides) and must give for `csv`.
#[derive(Clone, Debug, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct DataOptions {
    /// Label column (csv only; the named datasets know theirs).
    #[arg(long)]
    pub target: Option<String>,
    /// Label value(s) of the positive class, comma-separated (csv; default "1").
    #[arg(long, value_delimiter = ',')]
    pub positive: Vec<String>,
    /// Sensitive attribute: a column name ("sex"), or a numeric threshold ("age<25").
    #[arg(long)]
    pub sensitive: Option<String>,
    /// Columns holding categories, comma-separated (csv; added to a named dataset's own).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Columns of the data to leave out, comma-separated.
    #[arg(long, value_delimiter = ',')]
    #[serde(alias = "drop")]
    pub exclude: Vec<String>,
    /// Rows of the built-in synthetic dataset.
    #[arg(long, default_value_t = SYNTHETIC_ROWS)]
    pub rows: usize,
}

impl DataOptions {
    /// The options of a command line that gives none.
    pub fn defaults() -> DataOptions {
        DataOptions {
            rows: SYNTHETIC_ROWS,
            ..DataOptions::default()
        }
    }
}

fn sensitive_of(s: &str) -> Result<(String, SensitiveRule)> {
    match s.split_once('<') {
        Some((name, t)) => {
            let t: f64 = t
                .trim()
                .parse()
                .map_err(|_| Error::Usage(format!("--sensitive '{s}': '{t}' is not a number")))?;
            Ok((name.trim().to_string(), SensitiveRule::Below(t)))
        }
        None => Ok((s.trim().to_string(), SensitiveRule::Categories)),
    }
}

fn spec(
    name: &str,
    label: &str,
    positive: &[&str],
    categorical: &[&str],
    sensitive: &str,
    opts: &DataOptions,
) -> Result<Spec> {
    let mut categorical: Vec<String> = categorical.iter().map(|s| s.to_string()).collect();
    categorical.extend(opts.categorical.iter().cloned());
    Ok(Spec {
        name: name.into(),
        label: label.into(),
        positive: positive.iter().map(|s| s.to_string()).collect(),
        categorical,
        drop: opts.exclude.clone(),
        sensitive: Some(sensitive_of(
            opts.sensitive.as_deref().unwrap_or(sensitive),
        )?),
        missing: vec!["?".into(), "NA".into()],
        split: (0.7, 0.15),
    })
}

/// `path` itself if it is a file, else `path/file`.
fn file_in(path: &Path, file: &str) -> Result<PathBuf> {
    let p = if path.is_dir() {
        path.join(file)
    } else {
        path.to_path_buf()
    };
    if !p.exists() {
        return Err(Error::input(&p, format!("not found (expected {file})")));
    }
    Ok(p)
}

const ADULT_COLUMNS: [&str; 15] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
];
const GERMAN_COLUMNS: [&str; 21] = [
    "checking-status",
    "duration",
    "credit-history",
    "purpose",
    "credit-amount",
    "savings",
    "employment",
    "installment-rate",
    "personal-status",
    "other-debtors",
    "residence-since",
    "property",
    "age",
    "other-installment-plans",
    "housing",
    "existing-credits",
    "job",
    "dependents",
    "telephone",
    "foreign-worker",
    "credit",
];

/// Load a dataset. `path` is required for every dataset but `synthetic`.
pub fn load(
    name: DatasetName,
    path: Option<&Path>,
    opts: &DataOptions,
    seed: u64,
) -> Result<Dataset> {
    let path = || {
        path.ok_or_else(|| {
            Error::Usage(format!("--data PATH is required for the {name:?} dataset"))
        })
    };
    match name {
        DatasetName::Synthetic => synthetic(opts, seed),
        DatasetName::Adult => adult(path()?, opts, seed),
        DatasetName::Bank => bank(path()?, opts, seed),
        DatasetName::Compas => compas(path()?, opts, seed),
        DatasetName::German => german(path()?, opts, seed),
        DatasetName::Dutch => dutch(path()?, opts, seed),
        DatasetName::LawSchool => law_school(path()?, opts, seed),
        DatasetName::CreditCard => credit_card(path()?, opts, seed),
        DatasetName::Digits => image(path()?, "digits.csv.gz", "digits", 8, opts, seed),
        DatasetName::Mnist => image(path()?, "mnist_5k.csv.gz", "mnist-5k", 28, opts, seed),
        DatasetName::Csv => csv_file(path()?, opts, seed),
    }
}

/// The built-in synthetic data.
fn synthetic(opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let table = synthetic::table(opts.rows, seed);
    let mut s = spec(
        "synthetic",
        "label",
        &["1"],
        &synthetic::CATEGORICAL,
        "group",
        opts,
    )?;
    // A third for training, a ninth for validation, the rest (10,000 of the default 18,000
    // rows) for a test split large enough to resolve a 0.05 fairness gap.
    s.split = (1.0 / 3.0, 1.0 / 9.0);
    build(&table, &s, None, seed)
}

/// UCI Adult: adult.data and adult.test in `dir` (the official test split kept).
fn adult(dir: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let dir = if dir.is_file() {
        dir.parent().unwrap_or(Path::new("."))
    } else {
        dir
    };
    let train = read_delimited(
        &file_in(dir, "adult.data")?,
        b',',
        false,
        Some(&ADULT_COLUMNS),
        Some(b'|'),
    )?;
    let test = read_delimited(
        &file_in(dir, "adult.test")?,
        b',',
        false,
        Some(&ADULT_COLUMNS),
        Some(b'|'),
    )?;
    let n_train = train.rows.len();
    let mut table = train;
    table.source = dir.to_path_buf();
    table.rows.extend(test.rows);
    table.lines.extend(test.lines);
    let fixed: Vec<Option<Part>> = (0..table.rows.len())
        .map(|r| if r < n_train { None } else { Some(Part::Test) })
        .collect();
    let cats = [
        "workclass",
        "education",
        "marital-status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "native-country",
    ];
    let mut s = spec("adult", "income", &[">50K"], &cats, "sex", opts)?;
    // fnlwgt is a census sampling weight, not an attribute of the person; education-num
    // encodes education exactly.
    s.drop
        .extend(["fnlwgt".to_string(), "education".to_string()]);
    s.split = (0.8, 0.2);
    build(&table, &s, Some(&fixed), seed)
}

/// UCI Bank marketing: bank-full.csv (';') or the cleaned comma-separated copy.
fn bank(dir: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = if dir.is_dir() && !dir.join("bank-full.csv").exists() {
        // The cleaned comma-separated copy under its own name.
        std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|x| x == "csv")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("bank"))
            })
            .ok_or_else(|| Error::input(dir, "no bank-full.csv here"))?
    } else {
        file_in(dir, "bank-full.csv")?
    };
    let first = crate::io::read(&p)?
        .split(|&b| b == b'\n')
        .next()
        .map(|l| l.to_vec())
        .unwrap_or_default();
    let delim = if first.contains(&b';') { b';' } else { b',' };
    let table = read_delimited(&p, delim, true, None, None)?;
    let cats = [
        "job",
        "marital",
        "education",
        "default",
        "housing",
        "loan",
        "contact",
        "month",
        "poutcome",
    ];
    build(
        &table,
        &spec("bank", "y", &["yes"], &cats, "age<25", opts)?,
        None,
        seed,
    )
}

/// ProPublica COMPAS two-year data, with ProPublica's filter.
fn compas(path: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = file_in(path, "compas-scores-two-years.csv")?;
    let raw = read_delimited(&p, b',', true, None, None)?;
    let table = compas_filter(&raw)?;
    let cats = ["sex", "age_cat", "race", "c_charge_degree"];
    build(
        &table,
        &spec("compas", "two_year_recid", &["1"], &cats, "race", opts)?,
        None,
        seed,
    )
}

/// UCI Statlog German credit (sex read out of personal-status).
fn german(path: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = file_in(path, "german.data")?;
    let mut table = read_delimited(&p, b' ', false, Some(&GERMAN_COLUMNS), None)?;
    // Sex is encoded inside personal-status (A92, A95 female).
    let ps = table.column("personal-status")?;
    table.columns.insert(0, "sex".into());
    for row in &mut table.rows {
        let sex = if row[ps] == "A92" || row[ps] == "A95" {
            "female"
        } else {
            "male"
        };
        row.insert(0, sex.into());
    }
    let cats = [
        "sex",
        "checking-status",
        "credit-history",
        "purpose",
        "savings",
        "employment",
        "personal-status",
        "other-debtors",
        "property",
        "other-installment-plans",
        "housing",
        "job",
        "telephone",
        "foreign-worker",
    ];
    build(
        &table,
        &spec("german", "credit", &["1"], &cats, "sex", opts)?,
        None,
        seed,
    )
}

/// Dutch census 2001.
fn dutch(path: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = file_in(path, "dutch.csv")?;
    let table = read_delimited(&p, b',', true, None, None)?;
    let cats = [
        "sex",
        "household_position",
        "household_size",
        "prev_residence_place",
        "citizenship",
        "country_birth",
        "edu_level",
        "economic_status",
        "cur_eco_activity",
        "marital_status",
    ];
    build(
        &table,
        &spec("dutch", "occupation", &["1"], &cats, "sex", opts)?,
        None,
        seed,
    )
}

/// LSAC law school.
fn law_school(path: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = file_in(path, "law_school_clean.csv")?;
    let table = read_delimited(&p, b',', true, None, None)?;
    build(
        &table,
        &spec(
            "law-school",
            "pass_bar",
            &["1.0", "1"],
            &["race"],
            "race",
            opts,
        )?,
        None,
        seed,
    )
}

/// UCI default of credit-card clients.
fn credit_card(path: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let p = file_in(path, "credit-card-clients.csv")?;
    let table = read_delimited(&p, b',', true, None, None)?;
    build(
        &table,
        &spec(
            "credit-card",
            "default payment",
            &["1"],
            &["SEX", "EDUCATION", "MARRIAGE"],
            "SEX",
            opts,
        )?,
        None,
        seed,
    )
}

/// Any CSV (or .tsv) with a header and a `--target` column.
fn csv_file(p: &Path, opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let target = opts
        .target
        .clone()
        .ok_or_else(|| Error::Usage("--target COLUMN is required for a CSV file".into()))?;
    let delim = if p.extension().is_some_and(|e| e == "tsv") {
        b'\t'
    } else {
        b','
    };
    let table = read_delimited(p, delim, true, None, None)?;
    csv_dataset(p, &table, &target, opts, seed)
}

/// Square grey-level images, one row of `side` x `side` pixels and a class label per line, no
/// header: every pixel a numeric feature named `pR_C` (standardised like any number), the label
/// one of ten classes. No sensitive attribute unless `--sensitive` names one.
fn image(
    path: &Path,
    file: &str,
    name: &str,
    side: usize,
    opts: &DataOptions,
    seed: u64,
) -> Result<Dataset> {
    let p = file_in(path, file)?;
    let columns: Vec<String> = (0..side * side)
        .map(|i| format!("p{}_{}", i / side, i % side))
        .chain(std::iter::once("label".to_string()))
        .collect();
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let table = read_delimited(&p, b',', false, Some(&names), None)?;
    let mut s = spec(name, "label", &[], &[], "", opts)?;
    if opts.sensitive.is_none() {
        s.sensitive = None;
    }
    build(&table, &s, None, seed)
}

/// A generic CSV file's bytes (read from `path`, named in errors) as a dataset with label
/// column `opts.target`: what `load` does for a CSV file, without the file.
pub fn load_csv_bytes(path: &Path, bytes: &[u8], opts: &DataOptions, seed: u64) -> Result<Dataset> {
    let target = opts
        .target
        .clone()
        .ok_or_else(|| Error::Usage("--target COLUMN is required for a CSV file".into()))?;
    let table = crate::io::data::parse_delimited(path, bytes, b',', true, None, None)?;
    csv_dataset(path, &table, &target, opts, seed)
}

fn csv_dataset(
    p: &Path,
    table: &RawTable,
    target: &str,
    opts: &DataOptions,
    seed: u64,
) -> Result<Dataset> {
    let positive: Vec<&str> = if opts.positive.is_empty() {
        vec!["1", "1.0"]
    } else {
        opts.positive.iter().map(String::as_str).collect()
    };
    let name = p
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "csv".into());
    let mut s = spec(&name, target, &positive, &[], "", opts)?;
    if opts.sensitive.is_none() {
        s.sensitive = None;
    }
    build(table, &s, None, seed)
}

/// ProPublica's filter of the two-year COMPAS data: screening within 30 days of arrest, a known
/// recidivism outcome, no ordinary traffic offences, a valid score. Keeps their feature set.
fn compas_filter(raw: &RawTable) -> Result<RawTable> {
    let col = |n: &str| raw.column(n);
    let (days, recid, degree, score) = (
        col("days_b_screening_arrest")?,
        col("is_recid")?,
        col("c_charge_degree")?,
        col("score_text")?,
    );
    let keep_cols = [
        "sex",
        "age",
        "age_cat",
        "race",
        "juv_fel_count",
        "juv_misd_count",
        "juv_other_count",
        "priors_count",
        "c_charge_degree",
        "two_year_recid",
    ];
    let idx: Vec<usize> = keep_cols.iter().map(|c| col(c)).collect::<Result<_>>()?;
    let mut out = RawTable {
        source: raw.source.clone(),
        columns: keep_cols.iter().map(|s| s.to_string()).collect(),
        rows: vec![],
        lines: vec![],
    };
    for (row, &line) in raw.rows.iter().zip(&raw.lines) {
        let ok = row[days]
            .parse::<f64>()
            .is_ok_and(|d| (-30.0..=30.0).contains(&d))
            && row[recid] != "-1"
            && row[degree] != "O"
            && row[score] != "N/A";
        if ok {
            out.rows.push(idx.iter().map(|&i| row[i].clone()).collect());
            out.lines.push(line);
        }
    }
    Ok(out)
}

/// Which dataset a path holds, from its standard file names; any other file is a generic CSV.
pub fn detect(path: &Path) -> DatasetName {
    let has = |f: &str| {
        if path.is_dir() {
            path.join(f).exists()
        } else {
            path.file_name().is_some_and(|n| n == f)
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if has("adult.data") || has("adult.test") {
        DatasetName::Adult
    } else if has("compas-scores-two-years.csv") {
        DatasetName::Compas
    } else if has("german.data") {
        DatasetName::German
    } else if has("dutch.csv") {
        DatasetName::Dutch
    } else if has("law_school_clean.csv") {
        DatasetName::LawSchool
    } else if has("credit-card-clients.csv") {
        DatasetName::CreditCard
    } else if has("digits.csv.gz") {
        DatasetName::Digits
    } else if has("mnist_5k.csv.gz") {
        DatasetName::Mnist
    } else if has("bank-full.csv")
        || (path.is_file() && name.starts_with("bank"))
        || (path.is_dir() && name == "bank")
    {
        DatasetName::Bank
    } else {
        DatasetName::Csv
    }
}
