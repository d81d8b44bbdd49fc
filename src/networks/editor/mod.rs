//! The editor: a graph metanetwork over parameter graphs (see `graph`). Per layer:
//!   edge update   z = A x_src + B x_dst + C e + b;  e <- e + W_m silu(z) + b_m
//!                 (A x and B x are computed once per node, then gathered to edges)
//!   aggregation   fwd_i = mean of e over in-edges of i,  bwd_i = mean over out-edges of i
//!   node update   x <- FiLM_c(LayerNorm(x + W_o silu(U_x x + U_f fwd + U_b bwd + b) + b_o))
//! Heads give per edge (dw, mask logit) and per node (db, neuron mask logit); their last layers
//! start at zero, so an untrained editor is the identity edit.
//!
//! As in llm.c: parameters in one buffer with a typed handle per tensor (`params`), activations
//! in a tape with a typed handle per activation (`acts`), forward a straight sequence of block
//! calls and backward the same blocks reversed, each block's forward and backward side by side
//! (`blocks`). Training and edits run the same layer routine; an edit keeps edge state in slices
//! of their own buffers instead of a tape, so that models above the largest buffer still run.

mod acts;
mod blocks;
mod params;

pub use acts::{DeviceGraph, EdgeSpans, InferBuffers, NodeSpans, Tape, TapeLayout};
pub use params::{EditorParams, Entry, HeadParams, Init, LayerParams, Span};

use crate::engine::buffer::Buf;
use crate::engine::device::Device;
use crate::engine::kernels::adam::{adam_step, Adam};
use crate::engine::kernels::axpy::{axpy, copy};
use crate::error::Result;
use crate::networks::graph::{PosIds, EDGE_FEATURES};
use rand::{Rng, SeedableRng};

/// Outputs per edge (dw, mask logit) and per node (db, neuron mask logit).
pub const HEAD_OUT: usize = 2;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditorConfig {
    pub hidden: usize,
    pub layers: usize,
    pub cond_dim: usize,
    pub pos: PosIds,
    /// Features per edge it reads (`graph::EDGE_FEATURES`, or `EDGE_FEATURES_WITH_RETURNS`
    /// for editors that may bring back pruned weights); editors saved before it existed read 2.
    #[serde(default = "base_edge_features")]
    pub edge_features: usize,
}

fn base_edge_features() -> usize {
    EDGE_FEATURES
}

pub struct Editor {
    pub cfg: EditorConfig,
    pub layout: EditorParams,
    pub params: Buf,
    pub grads: Buf,
    /// Adam moments: m for every parameter, then v.
    pub opt_state: Buf,
    /// Training with averaging: the exponential moving average of the parameters after each
    /// step (`update_average`), which validation reads and the kept checkpoint holds.
    pub average: Option<Buf>,
    pub step: u32,
}

impl Editor {
    /// A fresh editor: linear layers as PyTorch initialises them, LayerNorm at (1, 0), FiLM and
    /// the heads' last layers at zero, so it starts as the identity edit.
    pub fn new(dev: &Device, cfg: &EditorConfig, seed: u64) -> Result<Editor> {
        let layout = EditorParams::new(cfg);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut p = vec![0.0f32; layout.total];
        for entry in &layout.entries {
            let v = &mut p[entry.span.offset..][..entry.span.len];
            match entry.init {
                Init::Embedding => v.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0)),
                Init::LayerNorm => v[..entry.span.len / 2].fill(1.0),
                Init::Zero => {}
                Init::Linear { fan_in } => {
                    let b = 1.0 / (fan_in as f32).sqrt();
                    v.iter_mut().for_each(|x| *x = rng.random_range(-b..b));
                }
            }
        }
        Editor::from_params(dev, cfg, &p)
    }

    pub fn from_params(dev: &Device, cfg: &EditorConfig, params: &[f32]) -> Result<Editor> {
        let layout = EditorParams::new(cfg);
        assert_eq!(params.len(), layout.total, "editor parameter count");
        Ok(Editor {
            cfg: cfg.clone(),
            params: dev.upload(params)?,
            grads: dev.alloc(layout.total)?,
            opt_state: dev.alloc(2 * layout.total)?,
            average: None,
            layout,
            step: 0,
        })
    }

    /// Run the editor on a graph, keeping every activation in the tape; the outputs are the
    /// tape's `edge_out` [E, 2] and `node_out` [N, 2] (`Tape::head`).
    pub fn forward(&self, dev: &Device, g: &DeviceGraph, t: &Tape) -> Result<()> {
        let (at, last) = (&t.at, self.cfg.layers);
        self.check_edge_features(g);
        self.node_input(dev, g, t.a(at.x[0]))?;
        self.edge_input(dev, g.edge_feat(), t.a(at.e[0]))?;
        for i in 0..last {
            let acts = at.nodes[i].of(&t.acts);
            let (x, x1) = (t.a(at.x[i]), t.a(at.x[i + 1]));
            self.layer_forward(dev, g, i, x, &acts, &[t.edge_slice(i)], x1)?;
        }
        let (eh, nh) = (&self.layout.edge_head, &self.layout.node_head);
        let el = t.a(at.e[last]);
        self.head_forward(dev, eh, el, t.a(at.eh_pre), t.a(at.eh), t.a(at.edge_out))?;
        let xl = t.a(at.x[last]);
        self.head_forward(dev, nh, xl, t.a(at.nh_pre), t.a(at.nh), t.a(at.node_out))
    }

    /// The graph was built for this editor: as many features per edge as it reads.
    fn check_edge_features(&self, g: &DeviceGraph) {
        assert_eq!(
            g.edge_feat().len,
            g.e * self.cfg.edge_features,
            "the graph's edge features are not the editor's"
        );
    }

    /// The forward pass of an edit, without a tape: node state whole, edge state in slices of
    /// their own buffers (see `InferBuffers`). Returns what `forward` leaves in `Tape::head`:
    /// the head outputs of every edge, then of every node, [E + N, 2].
    pub fn infer(&self, dev: &Device, g: &DeviceGraph, b: &InferBuffers) -> Result<Vec<f32>> {
        let (h, last, f) = (self.cfg.hidden, self.cfg.layers, self.cfg.edge_features);
        self.check_edge_features(g);
        // Layer i reads node state x[i % 2] and edge state edges[i % 2], writes the other.
        let x = |i: usize| b.x[i % 2].of(&b.nodes);
        let acts = b.acts.of(&b.nodes);
        self.node_input(dev, g, x(0))?;
        for (r, buf) in b.slices.iter().zip(&b.edges[0]) {
            let feat = g.edge_feat().sub(r.start * f, r.len() * f);
            self.edge_input(dev, feat, buf.all())?;
        }
        for i in 0..last {
            self.layer_forward(dev, g, i, x(i), &acts, &b.edge_slices(i, h), x(i + 1))?;
        }
        // Edge heads slice by slice (z, hz as scratch), node heads with ax, bx as scratch; one
        // read of them all.
        for s in b.edge_slices(last, h) {
            let out = b
                .out
                .view(s.range.start * HEAD_OUT, s.range.len() * HEAD_OUT);
            self.head_forward(dev, &self.layout.edge_head, s.e, s.z, s.hz, out)?;
        }
        let out = b.out.view(g.e * HEAD_OUT, g.n * HEAD_OUT);
        self.head_forward(dev, &self.layout.node_head, x(last), acts.ax, acts.bx, out)?;
        dev.read_all(&b.out)
    }

    /// Backpropagate the output gradients the caller put in the gradient tape (`Tape::dhead`)
    /// into `grads` (all overwritten) and into the inputs: the tape's `edge_feat` [E, edge features] and
    /// `node_feat` [N, 7] gradients. Needs the activations of the last `forward`.
    pub fn backward(&self, dev: &Device, g: &DeviceGraph, t: &Tape) -> Result<()> {
        let (at, last) = (&t.at, self.cfg.layers);
        let eh = (t.a(at.eh_pre), t.a(at.eh), t.g(at.eh_pre), t.g(at.eh));
        let (el, del) = (t.a(at.e[last]), t.g(at.e[last]));
        self.head_backward(dev, &self.layout.edge_head, el, eh, t.g(at.edge_out), del)?;
        let nh = (t.a(at.nh_pre), t.a(at.nh), t.g(at.nh_pre), t.g(at.nh));
        let (xl, dxl) = (t.a(at.x[last]), t.g(at.x[last]));
        self.head_backward(dev, &self.layout.node_head, xl, nh, t.g(at.node_out), dxl)?;
        for i in (0..last).rev() {
            self.layer_backward(dev, g, t, i)?;
        }
        self.input_backward(dev, g, t)
    }

    /// One AdamW step on the gradients of the last `backward`.
    pub fn adam_step(&mut self, dev: &Device, opt: &Adam) -> Result<()> {
        self.step += 1;
        let n = self.layout.total;
        adam_step(
            dev,
            opt,
            self.step,
            self.params.all(),
            self.grads.all(),
            self.opt_state.view(0, n),
            self.opt_state.view(n, n),
        )
    }

    /// Fold the parameters into their moving average (started at the parameters, if none):
    /// average <- d average + (1 - d) params, with d = min(decay, (1 + t) / (10 + t)) after t
    /// steps, so that the first steps' parameters do not linger in it.
    pub fn update_average(&mut self, dev: &Device, decay: f32) -> Result<()> {
        let t = self.step as f32;
        let d = decay.min((1.0 + t) / (10.0 + t));
        match &self.average {
            Some(avg) => axpy(dev, 1.0 - d, self.params.all(), d, avg.all()),
            None => {
                let avg = dev.alloc(self.layout.total)?;
                copy(dev, self.params.all(), avg.all())?;
                self.average = Some(avg);
                Ok(())
            }
        }
    }

    /// The editor with the averaged parameters, if averaging: what training then validates and
    /// keeps.
    pub fn averaged(&self, dev: &Device) -> Result<Option<Editor>> {
        let Some(avg) = &self.average else {
            return Ok(None);
        };
        let mut ed = Editor::from_params(dev, &self.cfg, &dev.read_all(avg)?)?;
        ed.step = self.step;
        Ok(Some(ed))
    }
}
