//! The graph metanetwork: packing, identity at initialisation, GPU vs CPU, finite-difference
//! gradients (parameters and input weights), permutation equivariance, batching, checkpoints.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::activation::Activation;
use regop::networks::editor::{DeviceGraph, Editor, EditorConfig, InferBuffers, Tape, HEAD_OUT};
use regop::networks::graph::{GraphBatch, ModelInput, PosIds, Signals, NODE_FEATURES};
use regop::networks::mlp::{init_params, MlpShape};
use regop::Device;

const POS: PosIds = PosIds {
    max_inputs: 8,
    max_hidden_layers: 3,
    max_outputs: 2,
};

fn cfg(hidden: usize) -> EditorConfig {
    EditorConfig {
        hidden,
        layers: 2,
        cond_dim: 3,
        pos: POS,
        edge_features: regop::networks::graph::EDGE_FEATURES,
    }
}

#[derive(Clone)]
struct Case {
    shape: MlpShape,
    params: Vec<f32>,
    removed: Vec<bool>,
    sensitive: Vec<bool>,
    cond: Vec<f32>,
    signals: Signals,
    /// The values pruned weights return with (editors that move a rule's mask).
    returns: Option<Vec<f32>>,
}

fn case(rng: &mut impl Rng, dims: &[usize], seed: u64) -> Case {
    let shape = MlpShape::new(dims, Activation::Relu);
    Case {
        params: init_params(&shape, seed),
        removed: (0..dims[0]).map(|i| i == 1).collect(),
        sensitive: (0..dims[0]).map(|i| i == 0).collect(),
        cond: (0..3).map(|_| rng.random_range(-1.0..1.0)).collect(),
        signals: Signals {
            grad: random(rng, shape.n_params()),
            log_scale: rng.random_range(-3.0..0.0),
            activations: random(rng, 2 * (dims[0] + dims[1..].iter().sum::<usize>())),
        },
        returns: None,
        shape,
    }
}

impl Case {
    fn input(&self) -> ModelInput<'_> {
        ModelInput {
            shape: &self.shape,
            params: &self.params,
            removed: &self.removed,
            sensitive: &self.sensitive,
            cond: &self.cond,
            signals: Some(&self.signals),
            returns: self.returns.as_deref(),
        }
    }
}

fn graph(cases: &[Case]) -> GraphBatch {
    let inputs: Vec<ModelInput> = cases.iter().map(Case::input).collect();
    GraphBatch::build(&inputs, &POS).unwrap()
}

fn mixed(rng: &mut impl Rng) -> Vec<Case> {
    vec![
        case(rng, &[5, 7, 1], 1),
        case(rng, &[5, 4, 6, 2], 2),
        case(rng, &[3, 1], 3),
    ]
}

/// (edge_out, node_out) of the editor on a graph.
fn run(dev: &Device, ed: &Editor, g: &GraphBatch) -> (Vec<f32>, Vec<f32>) {
    let dg = DeviceGraph::upload(dev, g).unwrap();
    let t = Tape::new(dev, &ed.cfg, &dg).unwrap();
    ed.forward(dev, &dg, &t).unwrap();
    (
        dev.read(&t.acts, t.a(t.at.edge_out).offset, dg.e * HEAD_OUT)
            .unwrap(),
        dev.read(&t.acts, t.a(t.at.node_out).offset, dg.n * HEAD_OUT)
            .unwrap(),
    )
}

fn col0(v: &[f32]) -> Vec<f32> {
    v.chunks(HEAD_OUT).map(|c| c[0]).collect()
}

#[test]
fn graph_to_weights_is_the_exact_inverse() {
    let mut rng = fresh_rng("graph round trip");
    let cases = mixed(&mut rng);
    let g = graph(&cases);
    assert_eq!(g.models(), 3);
    assert_eq!(g.nodes(), (5 + 7 + 1) + (5 + 4 + 6 + 2) + (3 + 1));
    assert_eq!(g.edges(), (35 + 7) + (20 + 24 + 12) + 3);
    let back = g.unpack(&g.edge_weight, &g.node_bias());
    for (c, b) in cases.iter().zip(&back) {
        assert_eq!(&c.params, b);
    }
    // Sources and destinations are consistent with both CSRs.
    for n in 0..g.nodes() {
        for k in g.dst_offsets[n]..g.dst_offsets[n + 1] {
            assert_eq!(g.dst[k as usize], n as u32);
        }
        for k in g.src_offsets[n]..g.src_offsets[n + 1] {
            assert_eq!(g.src[g.src_perm[k as usize] as usize], n as u32);
        }
    }
    // Too many inputs for the editor: refused with the model named.
    let big = [case(&mut rng, &[9, 2, 1], 4)];
    let inputs: Vec<ModelInput> = big.iter().map(Case::input).collect();
    assert!(GraphBatch::build(&inputs, &POS)
        .unwrap_err()
        .contains("model 0"));
}

#[test]
fn an_untrained_editor_is_the_identity_edit() {
    let mut rng = fresh_rng("identity");
    let cases = mixed(&mut rng);
    let g = graph(&cases);
    for dev in [Device::cpu(), gpu()] {
        let ed = Editor::new(&dev, &cfg(16), 5).unwrap();
        let (eo, no) = run(&dev, &ed, &g);
        assert!(
            eo.iter().chain(&no).all(|&v| v == 0.0),
            "{}: an untrained editor must output exactly zero",
            dev.name()
        );
        let edited_w: Vec<f32> = g
            .edge_weight
            .iter()
            .zip(col0(&eo))
            .map(|(w, d)| w + d)
            .collect();
        let edited_b: Vec<f32> = g
            .node_bias()
            .iter()
            .zip(col0(&no))
            .map(|(b, d)| b + d)
            .collect();
        for (c, p) in cases.iter().zip(g.unpack(&edited_w, &edited_b)) {
            assert_eq!(c.params, p);
        }
    }
}

/// Forward and backward of the whole editor on both backends.
#[test]
fn whole_editor_agrees_across_backends() {
    let gpu = gpu();
    let mut rng = fresh_rng("editor gpu vs cpu");
    let cases = mixed(&mut rng);
    let g = graph(&cases);
    let cfg = cfg(16);
    let seed: u64 = rng.random();
    let re = random(&mut rng, g.edges() * HEAD_OUT);
    let rn = random(&mut rng, g.nodes() * HEAD_OUT);
    let mut results = Vec::new();
    for dev in [Device::cpu(), gpu] {
        let ed = random_editor(
            &dev,
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        );
        let dg = DeviceGraph::upload(&dev, &g).unwrap();
        let t = Tape::new(&dev, &cfg, &dg).unwrap();
        ed.forward(&dev, &dg, &t).unwrap();
        dev.write(&t.dacts, t.g(t.at.edge_out).offset, &re).unwrap();
        dev.write(&t.dacts, t.g(t.at.node_out).offset, &rn).unwrap();
        ed.backward(&dev, &dg, &t).unwrap();
        let out = [t.a(t.at.edge_out), t.a(t.at.node_out)]
            .map(|v| dev.read(&t.acts, v.offset, v.len).unwrap());
        let din = [t.g(t.at.edge_feat), t.g(t.at.node_feat)]
            .map(|v| dev.read(&t.dacts, v.offset, v.len).unwrap());
        results.push((out, din, dev.read_all(&ed.grads).unwrap()));
    }
    let rel = |a: &[f32], b: &[f32]| {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        num / a
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-30)
    };
    let (c, gp) = (&results[0], &results[1]);
    for k in 0..2 {
        assert!(
            rel(&c.0[k], &gp.0[k]) < 1e-5,
            "outputs {k}: {:e}",
            rel(&c.0[k], &gp.0[k])
        );
        assert!(
            rel(&c.1[k], &gp.1[k]) < 1e-4,
            "input gradients {k}: {:e}",
            rel(&c.1[k], &gp.1[k])
        );
    }
    assert!(
        rel(&c.2, &gp.2) < 1e-4,
        "parameter gradients: {:e}",
        rel(&c.2, &gp.2)
    );
}

use rand::SeedableRng;

/// `infer`, which holds edges in slices of their own buffers for models too big for one, gives
/// what `forward` leaves in the tape, on both backends and at any slice size (one edge, a
/// size that cuts models and aggregation segments in the middle, all edges at once).
#[test]
fn inference_in_edge_slices_matches_the_whole_forward() {
    let gpu = gpu();
    let mut rng = fresh_rng("editor slices");
    let cases = mixed(&mut rng);
    let g = graph(&cases);
    let cfg = cfg(16);
    let seed: u64 = rng.random();
    for dev in [Device::cpu(), gpu] {
        let ed = random_editor(
            &dev,
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        );
        let (edges, nodes) = run(&dev, &ed, &g);
        let whole = [edges, nodes].concat();
        let dg = DeviceGraph::upload(&dev, &g).unwrap();
        for slice in [1, 7, 23, g.edges() - 1, g.edges(), 10 * g.edges()] {
            let bufs = InferBuffers::new(&dev, &cfg, &dg, slice).unwrap();
            let got = ed.infer(&dev, &dg, &bufs).unwrap();
            assert_eq!(got.len(), whole.len());
            let worst = whole
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{}: slices of {slice} edges: {worst:e}",
                dev.name()
            );
        }
    }
}

/// Every gradient of the editor, also for editors that read a third edge feature (the values
/// pruned weights return with).
#[test]
fn editor_gradients_match_finite_differences() {
    let mut rng = fresh_rng("editor gradcheck");
    for returns in [false, true] {
        let mut cases = vec![
            case(&mut rng, &[4, 3, 2], 1),
            case(&mut rng, &[3, 2, 2, 1], 2),
        ];
        if returns {
            for c in &mut cases {
                c.returns = Some(random(&mut rng, c.shape.n_params()));
            }
        }
        editor_gradcheck(&mut rng, &graph(&cases));
    }
}

fn editor_gradcheck(rng: &mut impl Rng, g: &GraphBatch) {
    let dev = Device::cpu();
    let g = g.clone();
    let cfg = EditorConfig {
        hidden: 6,
        edge_features: g.edge_features,
        ..cfg(6)
    };
    let ed = random_editor(&dev, &cfg, rng);
    let params = dev.read_all(&ed.params).unwrap();
    let re = random(rng, g.edges() * HEAD_OUT);
    let rn = random(rng, g.nodes() * HEAD_OUT);
    let loss_of = |p: &[f32], gr: &GraphBatch| -> f64 {
        let e = Editor::from_params(&dev, &cfg, p).unwrap();
        let (eo, no) = run(&dev, &e, gr);
        eo.iter()
            .zip(&re)
            .chain(no.iter().zip(&rn))
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    // Analytic.
    let dg = DeviceGraph::upload(&dev, &g).unwrap();
    let t = Tape::new(&dev, &cfg, &dg).unwrap();
    ed.forward(&dev, &dg, &t).unwrap();
    dev.write(&t.dacts, t.g(t.at.edge_out).offset, &re).unwrap();
    dev.write(&t.dacts, t.g(t.at.node_out).offset, &rn).unwrap();
    ed.backward(&dev, &dg, &t).unwrap();
    let grads = dev.read_all(&ed.grads).unwrap();
    let d_edge_feat = dev
        .read(
            &t.dacts,
            t.g(t.at.edge_feat).offset,
            g.edges() * g.edge_features,
        )
        .unwrap();
    let d_node_feat = dev
        .read(
            &t.dacts,
            t.g(t.at.node_feat).offset,
            g.nodes() * NODE_FEATURES,
        )
        .unwrap();
    let h = 1e-2f32;
    let check = |what: &str, analytic: &[f32], numeric: &[f64]| {
        let num: f64 = analytic
            .iter()
            .zip(numeric)
            .map(|(a, n)| (*a as f64 - n).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
        assert!(den > 1e-3, "{what}: numeric gradient vanishes");
        assert!(num / den < 5e-3, "{what}: relative error {:e}", num / den);
        eprintln!(
            "{what}: relative error {:e} over {} values",
            num / den,
            numeric.len()
        );
    };
    // Every parameter.
    let mut p = params.clone();
    let numeric: Vec<f64> = (0..p.len())
        .map(|i| {
            let d = derivative(
                |x| {
                    p[i] = x;
                    loss_of(&p, &g)
                },
                params[i],
                h,
            );
            p[i] = params[i];
            d
        })
        .collect();
    check("parameters", &grads, &numeric);
    // Every edge input feature (weight, gradient) and every node input feature.
    let mut gg = g.clone();
    let numeric: Vec<f64> = (0..g.edges() * g.edge_features)
        .map(|k| {
            let d = derivative(
                |x| {
                    gg.edge_feat[k] = x;
                    loss_of(&params, &gg)
                },
                g.edge_feat[k],
                h,
            );
            gg.edge_feat[k] = g.edge_feat[k];
            d
        })
        .collect();
    check(
        "edge inputs (weights, gradients, returns)",
        &d_edge_feat,
        &numeric,
    );
    let numeric: Vec<f64> = (0..g.nodes() * NODE_FEATURES)
        .map(|k| {
            let d = derivative(
                |x| {
                    gg.node_feat[k] = x;
                    loss_of(&params, &gg)
                },
                g.node_feat[k],
                h,
            );
            gg.node_feat[k] = g.node_feat[k];
            d
        })
        .collect();
    check(
        "node inputs (biases, flags, signals)",
        &d_node_feat,
        &numeric,
    );
}

/// Permute the hidden neurons of layer `l` (rows of W[l], b[l]; columns of W[l+1]).
fn permute_hidden(shape: &MlpShape, p: &[f32], l: usize, perm: &[usize]) -> Vec<f32> {
    let mut q = p.to_vec();
    let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
    let (w, b) = (shape.weight_offset(l), shape.bias_offset(l));
    for (new, &old) in perm.iter().enumerate() {
        q[w + new * fi..w + (new + 1) * fi].copy_from_slice(&p[w + old * fi..w + (old + 1) * fi]);
        q[b + new] = p[b + old];
    }
    let (fi2, fo2, w2) = (
        shape.fan_in(l + 1),
        shape.fan_out(l + 1),
        shape.weight_offset(l + 1),
    );
    assert_eq!(fi2, fo);
    for j in 0..fo2 {
        for (new, &old) in perm.iter().enumerate() {
            q[w2 + j * fi2 + new] = p[w2 + j * fi2 + old];
        }
    }
    q
}

#[test]
fn permuting_hidden_neurons_permutes_the_edit() {
    let mut rng = fresh_rng("equivariance");
    let c = case(&mut rng, &[5, 6, 4, 2], 7);
    let shape = c.shape.clone();
    let mut p1: Vec<usize> = (0..6).collect();
    let mut p2: Vec<usize> = (0..4).collect();
    use rand::seq::SliceRandom;
    p1.shuffle(&mut rng);
    p2.shuffle(&mut rng);
    let perm = |p: &[f32]| permute_hidden(&shape, &permute_hidden(&shape, p, 0, &p1), 1, &p2);
    // The signals move with their neurons: gradients share the parameters' layout, activation
    // statistics are [node, 2] with nodes 5.. for the first hidden layer and 11.. for the second.
    let permute_signals = |s: &Signals| {
        let mut a = s.activations.clone();
        for (start, p) in [(5, &p1), (11, &p2)] {
            for (new, &old) in p.iter().enumerate() {
                a[2 * (start + new)..][..2]
                    .copy_from_slice(&s.activations[2 * (start + old)..][..2]);
            }
        }
        Signals {
            grad: perm(&s.grad),
            log_scale: s.log_scale,
            activations: a,
        }
    };
    let permuted = (perm(&c.params), permute_signals(&c.signals));
    for dev in [Device::cpu(), gpu()] {
        let ed = random_editor(&dev, &cfg(16), &mut rng);
        let edit = |(params, signals): (&[f32], &Signals)| {
            let cc = Case {
                shape: shape.clone(),
                params: params.to_vec(),
                removed: c.removed.clone(),
                sensitive: c.sensitive.clone(),
                cond: c.cond.clone(),
                signals: signals.clone(),
                returns: None,
            };
            let g = graph(&[cc]);
            let (eo, no) = run(&dev, &ed, &g);
            g.unpack(&col0(&eo), &col0(&no)).remove(0)
        };
        let want = perm(&edit((&c.params, &c.signals)));
        let got = edit((&permuted.0, &permuted.1));
        let err = max_abs_diff(&want, &got);
        let scale = want.iter().map(|a| a.abs()).fold(0.0f32, f32::max);
        assert!(scale > 1e-3, "edit is trivially zero");
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "{}: equivariance error {err}",
            dev.name()
        );
    }
}

#[test]
fn a_mixed_batch_edits_each_model_as_alone() {
    let mut rng = fresh_rng("batching");
    let cases = mixed(&mut rng);
    let dev = gpu();
    let ed = random_editor(&dev, &cfg(16), &mut rng);
    let g = graph(&cases);
    let (eo, no) = run(&dev, &ed, &g);
    let together = g.unpack(&col0(&eo), &col0(&no));
    for (k, c) in cases.iter().enumerate() {
        let alone = Case {
            shape: c.shape.clone(),
            params: c.params.clone(),
            removed: c.removed.clone(),
            sensitive: c.sensitive.clone(),
            cond: c.cond.clone(),
            signals: c.signals.clone(),
            returns: None,
        };
        let g1 = graph(&[alone]);
        let (eo1, no1) = run(&dev, &ed, &g1);
        let one = g1.unpack(&col0(&eo1), &col0(&no1)).remove(0);
        let err = max_abs_diff(&one, &together[k]);
        assert!(
            err < 1e-5,
            "model {k}: batched edit differs from its edit alone by {err}"
        );
    }
}

#[test]
fn checkpoints_round_trip() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("checkpoint");
    let cfg = cfg(8);
    let mut ed = random_editor(&dev, &cfg, &mut rng);
    let cases = mixed(&mut rng);
    let g = graph(&cases);
    // One training step so the optimiser state is not zero.
    let dg = DeviceGraph::upload(&dev, &g).unwrap();
    let t = Tape::new(&dev, &cfg, &dg).unwrap();
    ed.forward(&dev, &dg, &t).unwrap();
    dev.write(
        &t.dacts,
        t.g(t.at.edge_out).offset,
        &random(&mut rng, g.edges() * HEAD_OUT),
    )
    .unwrap();
    dev.write(
        &t.dacts,
        t.g(t.at.node_out).offset,
        &random(&mut rng, g.nodes() * HEAD_OUT),
    )
    .unwrap();
    ed.backward(&dev, &dg, &t).unwrap();
    ed.adam_step(&dev, &regop::engine::kernels::adam::Adam::default())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("editor.safetensors");
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("schema".to_string(), "{\"dataset\":\"x\"}".to_string());
    regop::workflows::edit::checkpoint::save_editor(&dev, &ed, &path, &extra, false).unwrap();
    let (back, meta) = regop::workflows::edit::checkpoint::load_editor(&dev, &path).unwrap();
    assert_eq!(back.cfg, cfg);
    assert_eq!(back.step, 1);
    assert!(back.average.is_none());
    assert_eq!(meta["schema"], extra["schema"]);
    assert_eq!(
        dev.read_all(&back.params).unwrap(),
        dev.read_all(&ed.params).unwrap()
    );
    assert_eq!(
        dev.read_all(&back.opt_state).unwrap(),
        dev.read_all(&ed.opt_state).unwrap()
    );
    assert_eq!(run(&dev, &back, &g), run(&dev, &ed, &g));
    // A model file is not an editor.
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sequential_f32.safetensors");
    let err = regop::workflows::edit::checkpoint::load_editor(&dev, &model)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a regop editor"), "{err}");
}

/// The moving average of the parameters follows its formula on both backends: it starts at the
/// parameters, then d avg + (1 - d) params with d = min(decay, (1 + t) / (10 + t)) after t
/// steps; a checkpoint keeps it, and the averaged editor holds it as parameters.
#[test]
fn the_moving_average_of_the_parameters_follows_its_formula() {
    let mut rng = fresh_rng("average");
    let cfg = cfg(8);
    let n = Editor::new(&Device::cpu(), &cfg, 0).unwrap().layout.total;
    let draws: Vec<Vec<f32>> = (0..6).map(|_| random(&mut rng, n)).collect();
    let decay = 0.5 + 0.45 * rng.random::<f32>();
    let mut expected = draws[0].clone();
    for (t, p) in draws.iter().enumerate().skip(1) {
        let d = decay.min((2.0 + t as f32) / (11.0 + t as f32));
        for (a, &x) in expected.iter_mut().zip(p) {
            *a = d * *a + (1.0 - d) * x;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for dev in [Device::cpu(), gpu()] {
        let mut ed = Editor::from_params(&dev, &cfg, &draws[0]).unwrap();
        assert!(
            ed.averaged(&dev).unwrap().is_none(),
            "averaging before any step"
        );
        for p in &draws {
            dev.write(&ed.params, 0, p).unwrap();
            ed.step += 1;
            ed.update_average(&dev, decay).unwrap();
        }
        let got = dev.read_all(ed.average.as_ref().unwrap()).unwrap();
        let err = max_abs_diff(&got, &expected);
        assert!(err < 1e-5, "moving average off by {err} (decay {decay})");
        let averaged = ed.averaged(&dev).unwrap().unwrap();
        assert_eq!(dev.read_all(&averaged.params).unwrap(), got);
        assert_eq!(averaged.step, ed.step);
        let path = dir.path().join("averaging.safetensors");
        let none = std::collections::BTreeMap::new();
        regop::workflows::edit::checkpoint::save_editor(&dev, &ed, &path, &none, true).unwrap();
        let (back, _) = regop::workflows::edit::checkpoint::load_editor(&dev, &path).unwrap();
        assert_eq!(dev.read_all(back.average.as_ref().unwrap()).unwrap(), got);
        assert_eq!(dev.read_all(&back.params).unwrap(), draws[5]);
    }
}

/// A checkpoint from before the editor read signals (input layers `node_in.w` [h, 3] and
/// `edge_in.w` [h, 1], optimiser state of that size) loads with zero columns for the signals
/// and fresh optimiser moments.
#[test]
fn an_editor_saved_before_the_signals_loads_with_zero_signal_columns() {
    use regop::workflows::edit::checkpoint::{load_editor, save_editor};
    let dev = Device::cpu();
    let c = cfg(8);
    let ed = random_editor(&dev, &c, &mut fresh_rng("older checkpoint"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.safetensors");
    save_editor(&dev, &ed, &path, &Default::default(), false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let old_cols = [("node_in.w", 3usize), ("edge_in.w", 1usize)];
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut removed = 0;
    for (name, view) in st.tensors() {
        let v = f32s(view.data());
        let shape = view.shape().to_vec();
        match old_cols.iter().find(|(n, _)| *n == name) {
            Some(&(_, old)) => {
                let (rows, cols) = (shape[0], shape[1]);
                let narrow: Vec<f32> = (0..rows)
                    .flat_map(|r| v[r * cols..r * cols + old].to_vec())
                    .collect();
                removed += rows * (cols - old);
                tensors.push((name, vec![rows, old], narrow));
            }
            None => tensors.push((name, shape, v)),
        }
    }
    let old_total = ed.layout.total - removed;
    for (name, shape, v) in &mut tensors {
        if name.starts_with("optimizer.") {
            *shape = vec![old_total];
            v.truncate(old_total);
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                s.clone(),
                bytemuck::cast_slice(v),
            )
            .unwrap();
            (n.clone(), view)
        })
        .collect();
    let meta: std::collections::HashMap<String, String> =
        meta.metadata().clone().unwrap_or_default();
    let old_path = dir.path().join("old.safetensors");
    std::fs::write(
        &old_path,
        safetensors::serialize(views, Some(meta)).unwrap(),
    )
    .unwrap();

    let (loaded, _) = load_editor(&dev, &old_path).unwrap();
    let got = dev.read_all(&loaded.params).unwrap();
    let mut want = dev.read_all(&ed.params).unwrap();
    for entry in &ed.layout.entries {
        if let Some(&(_, old)) = old_cols.iter().find(|(n, _)| *n == entry.name) {
            let (rows, cols) = (entry.shape[0], entry.shape[1]);
            for r in 0..rows {
                want[entry.span.offset + r * cols + old..entry.span.offset + (r + 1) * cols]
                    .fill(0.0);
            }
        }
    }
    assert_eq!(got, want);
    assert!(dev
        .read_all(&loaded.opt_state)
        .unwrap()
        .iter()
        .all(|&m| m == 0.0));
}
