//! Device faults and limits on the GPU backend (lavapipe where there is no GPU): a device lost
//! mid-job fails with one line and exit 2, leaves no output behind, and a training run or a
//! zoo resumes from what it had written; a model too big for the adapter's largest buffer, or for the
//! memory it has free, is edited in pieces, as on the CPU.

mod common;
use regop::Device;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn regop(device: &str, args: &[&str], lose_at: Option<u64>) -> Output {
    regop_env(device, args, &[("REGOP_FAULT_LOSE_DEVICE_AT", lose_at)])
}

/// The binary with environment variables set (those given `None` left unset).
fn regop_env(device: &str, args: &[&str], env: &[(&str, Option<u64>)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regop"));
    cmd.args(["--device", device]).args(args);
    for (k, v) in env {
        if let Some(v) = v {
            cmd.env(k, v.to_string());
        }
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The error line of a failed run: exactly one line starting "error:".
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn train_args<'a>(z: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "--seed",
        "3",
        "train",
        "--zoo",
        p(z),
        "--requirement",
        "prune",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--out",
        p(out),
    ]
}

#[test]
fn a_lost_device_fails_every_later_call_with_one_message() {
    let dev = common::gpu();
    let buf = dev.upload(&[1.0, 2.0, 3.0]).unwrap();
    let sum = dev.alloc(3).unwrap();
    assert_eq!(dev.read_all(&buf).unwrap(), [1.0, 2.0, 3.0]);
    let Device::Gpu(g) = &dev else { unreachable!() };
    g.destroy();
    // The loss is seen at the next wait for the device; from then on every call fails.
    let read = dev.read_all(&buf).map(|_| ());
    let out = dev.alloc(3).map(|_| ());
    // Launches are only recorded; their failure is reported when their results are read.
    let axpy = regop::engine::kernels::axpy::axpy(&dev, 1.0, buf.all(), 1.0, sum.all())
        .and_then(|_| dev.read_all(&sum).map(|_| ()));
    for (what, r) in [
        ("read", read),
        ("alloc", out),
        ("axpy", axpy),
        ("sync", dev.sync()),
        ("sync again", dev.sync()),
    ] {
        let msg = r.expect_err(what).to_string();
        assert!(
            msg.contains("GPU device lost") && !msg.contains('\n'),
            "{what}: {msg}"
        );
    }
}

#[test]
fn a_device_lost_mid_job_leaves_no_output_and_training_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let z = common::synthetic_zoo(dir.path(), "5");
    let ed = dir.path().join("ed");
    ok(&regop("cpu", &train_args(&z, &ed), None));
    let editor = ed.join("editor.safetensors");

    // An edit whose device is lost at its second submit: one line, exit 2, no file.
    let out_dir = dir.path().join("edited");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.safetensors");
    let model = z.join("model-00020.safetensors");
    let edit = [
        "edit",
        "--editor",
        p(&editor),
        "--model",
        p(&model),
        "--sparsity",
        "0.5",
        "--max-drop",
        "1",
        "--out",
        p(&out),
    ];
    let line = error_line(&regop("gpu", &edit, Some(2)));
    assert!(line.contains("GPU device lost"), "{line}");
    assert!(files_in(&out_dir).is_empty(), "{:?}", files_in(&out_dir));
    ok(&regop("gpu", &edit, None));
    assert_eq!(files_in(&out_dir), ["out.safetensors"]);

    // Training on the GPU whose device is lost after its first checkpoint: exit 2 with the
    // checkpoints whole, and `--resume` (device back) ends where an unbroken run does.
    let whole = dir.path().join("whole");
    ok(&regop("gpu", &train_args(&z, &whole), None));
    let cut = dir.path().join("cut");
    let mut lose_at = 10;
    loop {
        assert!(
            lose_at < 2000,
            "no submit count stops training after a checkpoint"
        );
        let _ = std::fs::remove_dir_all(&cut);
        let run = regop("gpu", &train_args(&z, &cut), Some(lose_at));
        if run.status.success() {
            panic!("training finished before its device was lost at submit {lose_at}");
        }
        let line = error_line(&run);
        assert!(line.contains("GPU device lost"), "{line}");
        if cut.join("last.safetensors").exists() {
            break;
        }
        // Failing before its first checkpoint, a run leaves no editor behind.
        assert!(files_in(&cut).is_empty(), "{:?}", files_in(&cut));
        lose_at += 10;
    }
    assert_eq!(files_in(&cut), ["editor.safetensors", "last.safetensors"]);
    let cpu = Device::cpu();
    let (_, meta) =
        regop::workflows::edit::checkpoint::load_editor(&cpu, &cut.join("last.safetensors"))
            .unwrap();
    assert!(meta["step"].parse::<usize>().unwrap() < 4);
    let mut resume = train_args(&z, &cut);
    resume.push("--resume");
    ok(&regop("gpu", &resume, None));
    for name in ["editor.safetensors", "last.safetensors"] {
        let (a, _) =
            regop::workflows::edit::checkpoint::load_editor(&cpu, &whole.join(name)).unwrap();
        let (b, _) =
            regop::workflows::edit::checkpoint::load_editor(&cpu, &cut.join(name)).unwrap();
        let (a, b) = (
            cpu.read_all(&a.params).unwrap(),
            cpu.read_all(&b.params).unwrap(),
        );
        let worst = common::max_abs_diff(&a, &b);
        assert!(worst < 1e-4, "{name}: resumed editor differs by {worst}");
    }
}

/// `regop zoo` on the GPU whose device is lost part-way: exit 2 with one line, and `--resume`
/// (device back) ends with the models of an unbroken run.
#[test]
fn a_zoo_whose_device_is_lost_resumes_to_the_unbroken_zoo() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        let out = p(out).to_string();
        [
            "--seed", "6", "zoo", "--count", "8", "--widths", "16,24", "--depth", "1-2",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--epochs".into(), "3".into(), "--out".into(), out])
        .collect()
    };
    let run = |out: &Path, lose_at: Option<u64>, resume: bool| {
        let mut a = args(out);
        if resume {
            a.push("--resume".into());
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        regop("gpu", &a, lose_at)
    };
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    ok(&run(&whole, None, false));
    let models = |d: &Path| {
        files_in(d)
            .into_iter()
            .filter(|f| f.starts_with("model-"))
            .collect::<Vec<_>>()
    };
    let mut lose_at = 5;
    loop {
        assert!(lose_at < 2000, "no submit count stops the zoo part-way");
        let _ = std::fs::remove_dir_all(&cut);
        let broken = run(&cut, Some(lose_at), false);
        assert!(
            !broken.status.success(),
            "the zoo finished before its device was lost"
        );
        let line = error_line(&broken);
        assert!(line.contains("GPU device lost"), "{line}");
        if !models(&cut).is_empty() {
            break;
        }
        lose_at += 5;
    }
    assert!(models(&cut).len() < 8);
    ok(&run(&cut, None, true));
    assert_eq!(models(&cut), models(&whole));
    for name in models(&whole) {
        let load = |d: &Path| {
            regop::io::model::Model::load(&d.join(&name))
                .unwrap()
                .flat_params()
        };
        let (a, b) = (load(&whole), load(&cut));
        let worst = common::max_abs_diff(&a, &b);
        assert!(worst < 1e-4, "{name} differs by {worst} after resuming");
    }
}

/// A zoo, an editor trained on it (CPU), and the zoo's first model widened to [in, 140, 140, 1]
/// (21,500 weights; same columns and metadata): (zoo, editor, widened model).
fn zoo_editor_and_wide_model(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let z = common::synthetic_zoo(dir, "5");
    let ed = dir.join("ed");
    ok(&regop("cpu", &train_args(&z, &ed), None));
    let small = regop::io::model::Model::load(&z.join("model-00000.safetensors")).unwrap();
    let dims = [small.layers[0].in_dim, 140, 140, 1];
    let mut rng = common::fresh_rng("wide model");
    let mut wide = small.clone();
    wide.layers = (0..3)
        .map(|l| regop::io::model::Linear {
            name: (2 * l).to_string(),
            out_dim: dims[l + 1],
            in_dim: dims[l],
            weight: common::random(&mut rng, dims[l] * dims[l + 1])
                .iter()
                .map(|v| v / (dims[l] as f32).sqrt())
                .collect(),
            bias: Some(common::random(&mut rng, dims[l + 1])),
        })
        .collect();
    let model = dir.join("wide.safetensors");
    wide.save(&model, false).unwrap();
    (z, ed.join("editor.safetensors"), model)
}

/// `regop edit` of `model` (a directory with `batch`) to `out`, pruning to 0.7, with `env` set.
fn prune(
    device: &str,
    editor: &Path,
    model: &Path,
    out: &Path,
    batch: bool,
    env: &[(&str, Option<u64>)],
) -> Output {
    let args = [
        "edit",
        "--editor",
        p(editor),
        if batch { "--batch" } else { "--model" },
        p(model),
        "--sparsity",
        "0.7",
        // These tests are about device faults, not accuracy: every edit is written.
        "--max-drop",
        "1",
        "--out",
        p(out),
    ];
    regop_env(device, &args, env)
}

/// The GPU's edit is the CPU's: scores that differ in the last bits may swap a weight or two
/// at the top-k boundary, nothing more.
fn same_edit(gpu: &Path, cpu: &Path) {
    let load = |f: &Path| regop::io::model::Model::load(f).unwrap().flat_params();
    let (gpu, cpu) = (load(gpu), load(cpu));
    let kept_differently = gpu
        .iter()
        .zip(&cpu)
        .filter(|(a, b)| (**a == 0.0) != (**b == 0.0))
        .count();
    assert!(
        kept_differently <= 4,
        "{kept_differently} weights kept on one backend only"
    );
    let worst = gpu
        .iter()
        .zip(&cpu)
        .filter(|(a, b)| **a != 0.0 && **b != 0.0)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "edited weights differ by {worst}");
    let zeros = cpu.iter().filter(|v| **v == 0.0).count() as f64 / cpu.len() as f64;
    assert!(zeros > 0.6, "the edit pruned only {zeros}");
}

/// An adapter whose largest buffer is 1 MiB (wgpu enforces the limit regop asks for) edits a
/// model whose editor state needs several times that: the edges go through the editor in
/// slices, and the edit is the CPU backend's.
#[test]
fn a_model_above_the_buffer_limit_is_edited_in_slices() {
    const CAP: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (_, editor, model) = zoo_editor_and_wide_model(dir.path());
    let wide = regop::io::model::Model::load(&model).unwrap();
    let edges = wide.layers.iter().map(|l| l.weight.len()).sum::<usize>() as u64;
    let (loaded, _) =
        regop::workflows::edit::checkpoint::load_editor(&Device::cpu(), &editor).unwrap();
    let edge_state = edges * loaded.cfg.hidden as u64 * 4;
    assert!(
        edge_state > 2 * CAP,
        "the model must need slices: {edge_state} bytes"
    );

    let (gpu, cpu) = (
        dir.path().join("gpu.safetensors"),
        dir.path().join("cpu.safetensors"),
    );
    ok(&prune(
        "gpu",
        &editor,
        &model,
        &gpu,
        false,
        &[("REGOP_GPU_MAX_BUFFER", Some(CAP))],
    ));
    ok(&prune("cpu", &editor, &model, &cpu, false, &[]));
    same_edit(&gpu, &cpu);
}

/// A device that cannot allocate more than 600 kB at once: a batch of models is edited in
/// smaller batches, a big model's edges in smaller slices, predictions in fewer rows, each
/// giving the CPU's edit; a training step's gradient is added up over pieces of models. Too
/// little memory for even one piece is one line and exit 2, with nothing written.
#[test]
fn out_of_memory_splits_the_work_or_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (z, editor, model) = zoo_editor_and_wide_model(dir.path());
    let oom = |bytes: u64| [("REGOP_FAULT_OOM_ABOVE", Some(bytes))];
    let out = |name: &str| dir.path().join(name);

    ok(&prune(
        "gpu",
        &editor,
        &model,
        &out("gpu.safetensors"),
        false,
        &oom(600_000),
    ));
    ok(&prune(
        "cpu",
        &editor,
        &model,
        &out("cpu.safetensors"),
        false,
        &[],
    ));
    same_edit(&out("gpu.safetensors"), &out("cpu.safetensors"));

    // All 24 zoo models in one batch need about 1.5 MB of edge state.
    ok(&prune(
        "gpu",
        &editor,
        &z,
        &out("gpu-zoo"),
        true,
        &oom(600_000),
    ));
    ok(&prune("cpu", &editor, &z, &out("cpu-zoo"), true, &[]));
    let names = files_in(&out("cpu-zoo"));
    assert_eq!(names.len(), 24);
    assert_eq!(files_in(&out("gpu-zoo")), names);
    for name in &names {
        same_edit(&out("gpu-zoo").join(name), &out("cpu-zoo").join(name));
    }

    // Training computes a step's gradient in pieces of models that fit and adds them up: it
    // ends where a run with room for whole steps does.
    let (roomy, tight) = (out("ed-roomy"), out("ed-tight"));
    ok(&regop("gpu", &train_args(&z, &roomy), None));
    ok(&regop_env("gpu", &train_args(&z, &tight), &oom(2_000_000)));
    let history = |dir: &Path| -> Vec<regop::workflows::train::Validation> {
        let (_, meta) = regop::workflows::edit::checkpoint::load_editor(
            &Device::cpu(),
            &dir.join("last.safetensors"),
        )
        .unwrap();
        serde_json::from_str(&meta["history"]).unwrap()
    };
    let (a, b) = (history(&roomy), history(&tight));
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert!(
            (a.loss - b.loss).abs() <= 1e-3 * a.loss.abs().max(1e-6),
            "step {}: validation loss {} with room, {} in pieces",
            a.step,
            a.loss,
            b.loss
        );
    }

    let none = out("none.safetensors");
    let line = error_line(&prune("gpu", &editor, &model, &none, false, &oom(4_000)));
    assert!(
        line.contains("out of memory") && line.contains("--device cpu"),
        "{line}"
    );
    assert!(!none.exists());

    // Training that cannot fit says which of its flags to lower, and writes nothing.
    let starved = out("ed-starved");
    let line = error_line(&regop_env("gpu", &train_args(&z, &starved), &oom(4_000)));
    assert!(
        line.contains("out of memory") && line.contains("--step-rows") && !line.contains("batches"),
        "{line}"
    );
    assert!(files_in(&starved).is_empty(), "{:?}", files_in(&starved));
}
