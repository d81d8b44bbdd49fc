//! The binary's device selection, `info` and `bench`, and usage errors.

use std::process::Command;

fn regop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn auto_picks_a_hardware_gpu_or_the_cpu_never_a_software_adapter() {
    let r = json(&regop(&["info", "--json"]));
    let adapters = r["adapters"].as_array().unwrap();
    let any_hardware = adapters.iter().any(|a| a["hardware"] == true);
    let chosen = r["chosen"].as_str().unwrap();
    if any_hardware {
        assert!(
            chosen.starts_with("gpu:") && !chosen.contains("software"),
            "{chosen}"
        );
    } else {
        assert!(
            chosen.starts_with("cpu"),
            "auto chose {chosen} with no hardware adapter"
        );
        assert!(r["reason"].as_str().unwrap().contains("no hardware GPU"));
    }
}

#[test]
fn device_gpu_reports_limits_and_features() {
    let r = json(&regop(&["--device", "gpu", "info", "--json"]));
    assert!(r["chosen"].as_str().unwrap().starts_with("gpu:"));
    assert!(
        r["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            >= 128 << 20
    );
    assert!(
        r["limits"]["max_compute_workgroups_per_dimension"]
            .as_u64()
            .unwrap()
            >= 65535
    );
    assert!(r["features"]["timestamp_query"].is_boolean());
    assert!(r["features"]["shader_f16"].is_boolean());
    // The table form says why.
    let out = regop(&["--device", "gpu", "info"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("chosen:") && text.contains("why:") && text.contains("timestamp queries"),
        "{text}"
    );
}

#[test]
fn bench_reports_positive_rates_on_both_devices() {
    for device in ["cpu", "gpu"] {
        let r = json(&regop(&["--device", device, "bench", "--quick", "--json"]));
        let results = r["results"].as_array().unwrap();
        assert!(
            results.iter().any(|x| x["unit"] == "GFLOP/s"),
            "{device}: no GEMM results"
        );
        assert!(
            results.iter().any(|x| x["unit"] == "model-steps/s"),
            "{device}: no MLP results"
        );
        for name in [
            "Gram matrix, 1 thread",
            "Gram matrix, all cores",
            "Cholesky factor, 1 thread",
            "Cholesky solve, 1 thread",
            "Cholesky solve, all cores",
            "SPD inverse, 1 thread",
            "SPD inverse, all cores",
            "natural step, 1 thread",
            "natural step, all cores",
        ] {
            assert!(
                results.iter().any(|x| x["name"] == name),
                "{device}: no {name}"
            );
        }
        for x in results {
            let rate = x["rate"].as_f64().unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{device}: {x}");
        }
        if device == "gpu" {
            assert!(results
                .iter()
                .any(|x| x["name"].as_str().unwrap().contains("tiled")));
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--device", "tpu", "info"][..],
        &["inspect"],
        &["no-such-command"],
    ] {
        let out = regop(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert_eq!(regop(&["--help"]).status.code(), Some(0));
}

/// With no usable driver (the Vulkan loader pointed at a driver file that does not exist):
/// `--device gpu` fails with one line and exit 2, `--device auto` falls back to the CPU backend
/// and still does the work.
#[test]
fn no_adapter_is_one_line_for_gpu_and_a_cpu_fallback_for_auto() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_regop"))
            .args(args)
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .output()
            .unwrap()
    };
    let gpu = run(&["--device", "gpu", "bench", "--quick"]);
    let err = String::from_utf8_lossy(&gpu.stderr);
    assert_eq!(gpu.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no wgpu adapter"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let auto = json(&run(&["--device", "auto", "--json", "bench", "--quick"]));
    assert!(
        auto["device"].as_str().unwrap().starts_with("cpu"),
        "{auto}"
    );
    assert!(!auto["results"].as_array().unwrap().is_empty());
}
