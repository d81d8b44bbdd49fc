//! The `regop` command line: global options, the printer, and one file per subcommand.
//! Exit codes: 0 = done (requirement met), 1 = ran but missed the requirement, 2 = bad input,
//! bad usage or no usable device. Errors are one line on stderr naming the file and the problem.

mod bench;
mod compare;
mod data;
mod demo;
mod edit;
mod eval;
mod info;
mod inspect;
mod train;
mod zoo;

use crate::engine::device::DeviceChoice;
use crate::error::Error;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "regop",
    version,
    about = "Edit trained neural networks for requirement compliance, on any GPU or the CPU"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Where to compute: a hardware GPU if present (auto), any wgpu adapter (gpu), or the CPU.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Seed for everything random.
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole pipeline on the built-in synthetic data: a zoo, the three editors, edits of
    /// held-out models against the baselines, and a report.
    Demo(demo::Args),
    /// Show the GPU adapters seen, the device chosen and why, its limits and features.
    Info(info::Args),
    /// Show a model file: layers, activation, parameters, sparsity, features, input-column norms.
    Inspect(inspect::Args),
    /// Time GEMM and MLP training steps on the chosen device, and the rules' solves on the host.
    Bench(bench::Args),
    /// Describe a dataset as regop reads it: splits, input columns, sensitive groups.
    Data(data::Args),
    /// Train a population of MLPs on a dataset (or merge shards of one).
    Zoo(zoo::Args),
    /// Accuracy, fairness and feature dependence of a model on its data.
    Eval(eval::Args),
    /// Run the baselines on a zoo's test models, timed side by side; write a report.
    Compare(compare::Args),
    /// Train an editor for a requirement on a zoo's training models.
    Train(train::Args),
    /// Edit a model (or a directory of models) with a trained editor, in one inference.
    Edit(edit::Args),
}

/// Status lines go to stderr so stdout holds only results (tables or JSON).
pub struct Printer {
    pub quiet: bool,
    pub verbose: bool,
    pub json: bool,
    /// Results not printed at all (a step of `regop demo`, which prints its own summary).
    pub silent: bool,
}

impl Printer {
    pub fn status(&self, msg: &str) {
        if !self.quiet && !self.json {
            eprintln!("{msg}");
        }
    }
    /// Something the user should know about a result (on stderr, in JSON mode too).
    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("warning: {msg}");
        }
    }
    pub fn detail(&self, msg: &str) {
        if self.verbose && !self.json {
            eprintln!("{msg}");
        }
    }
    /// Progress of long work as plain lines: where stderr is a log file rather than a
    /// terminal, a progress bar is not drawn, so a long run would otherwise say nothing.
    pub fn progress_line(&self, msg: &str) {
        use std::io::IsTerminal;
        if !self.quiet && !self.json && !std::io::stderr().is_terminal() {
            eprintln!("{msg}");
        }
    }
    /// A result on stdout.
    pub fn result(&self, text: &str) {
        if !self.silent {
            println!("{text}");
        }
    }
    pub fn json(&self, value: &impl serde::Serialize) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serialisable")
        );
    }
}

pub fn main() -> i32 {
    // Mesa's software Vulkan driver prints a scary "error:" line when this is unset; it only
    // wants a writable directory. Set before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let printer = Printer {
        quiet: cli.global.quiet,
        verbose: cli.global.verbose,
        json: cli.global.json,
        silent: false,
    };
    let result = dispatch(cli, &printer);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            2
        }
    }
}

/// Run one parsed command line.
fn dispatch(cli: Cli, p: &Printer) -> crate::error::Result<i32> {
    let g = cli.global;
    match cli.command {
        Command::Demo(a) => demo::run(&g, p, a),
        Command::Info(a) => info::run(&g, p, a),
        Command::Inspect(a) => inspect::run(&g, p, a),
        Command::Bench(a) => bench::run(&g, p, a),
        Command::Data(a) => data::run(&g, p, a),
        Command::Zoo(a) => zoo::run(&g, p, a),
        Command::Eval(a) => eval::run(&g, p, a),
        Command::Compare(a) => compare::run(&g, p, a),
        Command::Train(a) => train::run(&g, p, a),
        Command::Edit(a) => edit::run(&g, p, a),
    }
}

fn one_line(e: &Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        // clap checks duplicate names, conflicting flags and the like only when asked (or in a
        // debug build at parse time): check every subcommand here.
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
