//! `regop demo`: the whole pipeline on the built-in synthetic data, with no files and no flags.
//! It builds a small zoo, trains the three editors (data minimisation, fairness, pruning),
//! edits the held-out test models with each, compares with the baselines on the same device,
//! and writes one report that links the three comparisons.

use super::{Cli, Global, Printer};
use crate::error::{Error, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory.
    #[arg(long, default_value = "regop-demo")]
    pub out: PathBuf,
    /// Models in the zoo.
    #[arg(long, default_value_t = 64)]
    pub models: usize,
    /// Training steps per editor.
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Test models compared per requirement.
    #[arg(long, default_value_t = 8)]
    pub test_models: usize,
    /// Replace an earlier demo in --out.
    #[arg(long)]
    pub force: bool,
}

/// The three requirements as the demo asks them: (name, train flags, compare flags).
const TASKS: [(&str, &[&str], &[&str]); 3] = [
    ("minimise", &[], &["--drop", "group,proxy_num"]),
    (
        "fairness",
        &[],
        &["--max-gap", "0.05", "--lambdas", "1,8,64"],
    ),
    ("prune", &[], &["--sparsity", "0.8"]),
];

fn step(g: &Global, p: &Printer, args: &[String]) -> Result<()> {
    let mut full: Vec<String> = vec![
        "regop".into(),
        "--device".into(),
        format!("{:?}", g.device).to_lowercase(),
        "--seed".into(),
        g.seed.to_string(),
    ];
    full.extend(args.iter().cloned());
    let cli =
        Cli::try_parse_from(&full).map_err(|e| Error::Usage(format!("demo step {args:?}: {e}")))?;
    let sub = Printer {
        quiet: p.quiet,
        verbose: false,
        json: false,
        silent: true,
    };
    super::dispatch(cli, &sub)?;
    Ok(())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The summary rows of a comparison's results.json.
fn summary(path: &Path) -> Result<Vec<serde_json::Value>> {
    let bytes = crate::io::read(path)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::input(path, e.to_string()))?;
    Ok(v["summary"].as_array().cloned().unwrap_or_default())
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let t0 = Instant::now();
    if a.out.join("report.md").exists() && !a.force {
        return Err(Error::input(
            &a.out,
            "already holds a demo (pass --force to replace it)",
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let zoo = a.out.join("zoo");
    let zs = zoo.display().to_string();
    p.status(&format!(
        "[1/4] a zoo of {} MLPs on the built-in synthetic data -> {zs}",
        a.models
    ));
    step(
        g,
        p,
        &[
            s(&[
                "zoo",
                "--out",
                &zs,
                "--count",
                &a.models.to_string(),
                "--widths",
                "16,32",
                "--depth",
                "1-2",
                "--epochs",
                "4-8",
            ]),
            if a.force { s(&["--force"]) } else { vec![] },
        ]
        .concat(),
    )?;
    let mut md = String::from("# regop demo\n\nThe built-in synthetic data (sensitive attribute `group`; `proxy_num` and `proxy_cat` correlate with it). ");
    md += &format!(
        "A zoo of {} MLPs; editors trained on its training models for {} steps each; every method below edits the same {} held-out test models, timed on one device.\n\n",
        a.models, a.steps, a.test_models
    );
    let mut beaten = Vec::new();
    for (i, (task, train_flags, compare_flags)) in TASKS.iter().enumerate() {
        let ed_dir = zoo.join(format!("editor-{task}"));
        p.status(&format!(
            "[{}/4] training the {task} editor ({} steps) -> {}",
            i + 2,
            a.steps,
            ed_dir.display()
        ));
        step(
            g,
            p,
            &[
                s(&[
                    "train",
                    "--zoo",
                    &zs,
                    "--requirement",
                    task,
                    "--steps",
                    &a.steps.to_string(),
                    "--eval-every",
                    "100",
                    "--force",
                ]),
                s(train_flags),
            ]
            .concat(),
        )?;
        let cmp_dir = a.out.join(format!("compare-{task}"));
        p.status(&format!(
            "      editing {} test models and running the baselines -> {}",
            a.test_models,
            cmp_dir.display()
        ));
        step(
            g,
            p,
            &[
                s(&[
                    "compare",
                    "--zoo",
                    &zs,
                    "--requirement",
                    task,
                    "--editor",
                    &ed_dir
                        .join(crate::workflows::train::BEST)
                        .display()
                        .to_string(),
                    "--max-models",
                    &a.test_models.to_string(),
                    "--out",
                    &cmp_dir.display().to_string(),
                    "--force",
                ]),
                s(compare_flags),
            ]
            .concat(),
        )?;
        let rows = summary(&cmp_dir.join("results.json"))?;
        md += &format!("## {task}\n\nFull report: [compare-{task}/report.md](compare-{task}/report.md)\n\n| method | median accuracy | median drop | requirement met | median ms/edit |\n|---|---:|---:|---:|---:|\n");
        for r in &rows {
            md += &format!(
                "| {} | {:.4} | {:+.4} | {:.0}% | {:.2} |\n",
                r["method"].as_str().unwrap_or("?"),
                r["median_accuracy"].as_f64().unwrap_or(f64::NAN),
                -r["median_accuracy_drop"].as_f64().unwrap_or(f64::NAN),
                100.0 * r["satisfied"].as_f64().unwrap_or(f64::NAN),
                1e3 * r["median_seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
        md += "\n";
        // The trivial edit each editor must beat.
        let acc = |prefix: &str| {
            rows.iter()
                .find(|r| r["method"].as_str().is_some_and(|m| m.starts_with(prefix)))
                .and_then(|r| r["median_accuracy"].as_f64())
        };
        let trivial = match *task {
            "minimise" => acc("zero columns"),
            "prune" => acc("global magnitude @"),
            _ => None,
        };
        if let (Some(t), Some(e)) = (trivial, acc("editor")) {
            beaten.push(format!(
                "{task}: editor {e:.4} vs trivial edit {t:.4} median test accuracy"
            ));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    md += &format!("Whole demo: {secs:.0} s.\n");
    let report = a.out.join("report.md");
    crate::io::write_atomic(&report, md.as_bytes(), true)?;
    for b in &beaten {
        p.result(b);
    }
    p.result(&format!(
        "demo done in {secs:.0} s; report: {}",
        report.display()
    ));
    Ok(0)
}
