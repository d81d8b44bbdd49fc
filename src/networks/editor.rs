//! The editor: a graph metanetwork over parameter graphs (see `graph`). Per layer:
//!   edge update   z = A x_src + B x_dst + C e + b;  e <- e + W_m silu(z) + b_m
//!                 (A x and B x are computed once per node, then gathered to edges)
//!   aggregation   fwd_i = mean of e over in-edges of i,  bwd_i = mean over out-edges of i
//!   node update   x <- FiLM_c(LayerNorm(x + W_o silu(U_x x + U_f fwd + U_b bwd + b) + b_o))
//! Heads give per edge (dw, mask logit) and per node (db, neuron mask logit); their last layers
//! start at zero, so an untrained editor is the identity edit. Forward is a straight sequence of
//! kernel calls; backward is the same calls reversed (no autograd), as in llm.c.

use crate::engine::buffer::{Buf, View};
use crate::engine::device::Device;
use crate::engine::kernels::activation::{activation_backward, activation_forward, Activation};
use crate::engine::kernels::adam::{adam_step, Adam};
use crate::engine::kernels::axpy::{axpy, copy};
use crate::engine::kernels::bias::{bias_add, BiasAdd};
use crate::engine::kernels::film::{film_backward, film_forward, RowModels};
use crate::engine::kernels::gather::{gather_rows, gather_rows_with, GatherOpts};
use crate::engine::kernels::gemm::{gemm, Gemm};
use crate::engine::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::engine::kernels::reduce::{reduce, Axis, Reduce};
use crate::engine::kernels::segment::{segment_reduce, SegmentOpts};
use crate::error::{Error, Result};
use crate::networks::graph::{GraphBatch, PosIds, NODE_FEATURES};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "regop-editor/1";
/// Outputs per edge (dw, mask logit) and per node (db, neuron mask logit).
pub const HEAD_OUT: usize = 2;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditorConfig {
    pub hidden: usize,
    pub layers: usize,
    pub cond_dim: usize,
    pub pos: PosIds,
}

/// Named tensors packed in one buffer, in a fixed order.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub entries: Vec<(String, Vec<usize>, usize)>,
    index: BTreeMap<String, usize>,
    pub total: usize,
}

impl ParamLayout {
    fn new(cfg: &EditorConfig) -> ParamLayout {
        let h = cfg.hidden;
        let mut l = ParamLayout {
            entries: vec![],
            index: BTreeMap::new(),
            total: 0,
        };
        l.add("embed", &[cfg.pos.count(), h]);
        l.add("node_in.w", &[h, NODE_FEATURES]);
        l.add("node_in.b", &[h]);
        l.add("edge_in.w", &[h, 1]);
        l.add("edge_in.b", &[h]);
        for i in 0..cfg.layers {
            for (n, s) in [
                ("src_w", vec![h, h]),
                ("dst_w", vec![h, h]),
                ("edge_w", vec![h, h]),
                ("edge_b", vec![h]),
                ("msg_w", vec![h, h]),
                ("msg_b", vec![h]),
                ("node_x", vec![h, h]),
                ("node_f", vec![h, h]),
                ("node_r", vec![h, h]),
                ("node_b", vec![h]),
                ("out_w", vec![h, h]),
                ("out_b", vec![h]),
                ("ln", vec![2 * h]),
                ("film_w", vec![2 * h, cfg.cond_dim]),
                ("film_b", vec![2 * h]),
            ] {
                l.add(&format!("layer{i}.{n}"), &s);
            }
        }
        for head in ["edge_head", "node_head"] {
            l.add(&format!("{head}.w1"), &[h, h]);
            l.add(&format!("{head}.b1"), &[h]);
            l.add(&format!("{head}.w2"), &[HEAD_OUT, h]);
            l.add(&format!("{head}.b2"), &[HEAD_OUT]);
        }
        l
    }
    fn add(&mut self, name: &str, shape: &[usize]) {
        self.index.insert(name.to_string(), self.entries.len());
        self.entries
            .push((name.to_string(), shape.to_vec(), self.total));
        self.total += shape.iter().product::<usize>();
    }
    /// (offset, length) of a tensor.
    pub fn get(&self, name: &str) -> (usize, usize) {
        let (_, shape, off) = &self.entries[self.index[name]];
        (*off, shape.iter().product())
    }
}

/// The buffers of `Editor::infer` on one graph. Node state is whole, in one buffer (x twice,
/// to alternate layers, and one layer's activations: about 10 x hidden floats per node). Edge
/// state, twice as well, is cut into slices of at most `slice_edges` edges, one buffer each.
pub struct InferBuffers {
    slices: Vec<std::ops::Range<usize>>,
    nodes: Buf,
    edges: [Vec<Buf>; 2],
    /// One slice's pre-activation and activation; `out` the head rows of every edge, then of
    /// every node.
    z: Buf,
    hz: Buf,
    out: Buf,
}

impl InferBuffers {
    pub fn new(
        dev: &Device,
        cfg: &EditorConfig,
        g: &DeviceGraph,
        slice_edges: usize,
    ) -> Result<InferBuffers> {
        let (n, e, m, h) = (g.n, g.e, g.m, cfg.hidden);
        let step = slice_edges.clamp(1, e.max(1));
        let slices: Vec<std::ops::Range<usize>> =
            (0..e).step_by(step).map(|a| a..(a + step).min(e)).collect();
        let edge_state =
            || -> Result<Vec<Buf>> { slices.iter().map(|r| dev.alloc(r.len() * h)).collect() };
        Ok(InferBuffers {
            nodes: dev.alloc(10 * n * h + 2 * n + m * 2 * h)?,
            edges: [edge_state()?, edge_state()?],
            z: dev.alloc(step * h)?,
            hz: dev.alloc(step * h)?,
            out: dev.alloc((e + n) * HEAD_OUT)?,
            slices,
        })
    }
}

/// One layer's node-level activations: views into the tape, or the buffers of `infer`.
struct NodeActs<'a> {
    ax: View<'a>,
    bx: View<'a>,
    fwd: View<'a>,
    bwd: View<'a>,
    u: View<'a>,
    hu: View<'a>,
    xres: View<'a>,
    ln_out: View<'a>,
    stats: View<'a>,
    gb: View<'a>,
}

pub struct Editor {
    pub cfg: EditorConfig,
    pub layout: ParamLayout,
    pub params: Buf,
    pub grads: Buf,
    /// Adam moments: m for every parameter, then v.
    pub opt_state: Buf,
    pub step: u32,
}

/// A graph batch on the device: u32 indices in one buffer, f32 inputs in another.
pub struct DeviceGraph {
    pub n: usize,
    pub e: usize,
    pub m: usize,
    pub idx: Buf,
    pub data: Buf,
    idx_off: BTreeMap<&'static str, (usize, usize)>,
    data_off: BTreeMap<&'static str, (usize, usize)>,
}

impl DeviceGraph {
    pub fn upload(dev: &Device, g: &GraphBatch) -> Result<DeviceGraph> {
        let mut idx = Vec::new();
        let mut idx_off = BTreeMap::new();
        for (name, v) in [
            ("src", &g.src),
            ("dst", &g.dst),
            ("dst_offsets", &g.dst_offsets),
            ("src_perm", &g.src_perm),
            ("src_offsets", &g.src_offsets),
            ("pos", &g.node_pos),
            ("pos_perm", &g.pos_perm),
            ("pos_offsets", &g.pos_offsets),
            ("node_model", &g.node_model),
            ("node_offsets", &g.node_offsets),
        ] {
            idx_off.insert(name, (idx.len(), v.len()));
            idx.extend_from_slice(v);
        }
        let mut data = Vec::new();
        let mut data_off = BTreeMap::new();
        for (name, v) in [
            ("node_feat", &g.node_feat),
            ("edge_weight", &g.edge_weight),
            ("inv_in", &g.inv_in_deg),
            ("inv_out", &g.inv_out_deg),
            ("cond", &g.cond),
        ] {
            data_off.insert(name, (data.len(), v.len()));
            data.extend_from_slice(v);
        }
        Ok(DeviceGraph {
            n: g.nodes(),
            e: g.edges(),
            m: g.models(),
            idx: dev.upload_u32(&idx)?,
            data: dev.upload(&data)?,
            idx_off,
            data_off,
        })
    }
    pub fn i(&self, name: &str) -> View<'_> {
        let (o, l) = self.idx_off[name];
        self.idx.view(o, l)
    }
    pub fn d(&self, name: &str) -> View<'_> {
        let (o, l) = self.data_off[name];
        self.data.view(o, l)
    }
}

/// Activation offsets for one graph size; the gradient tape has the same layout.
pub struct Tape {
    pub acts: Buf,
    pub dacts: Buf,
    off: BTreeMap<String, (usize, usize)>,
}

impl Tape {
    pub fn new(dev: &Device, cfg: &EditorConfig, g: &DeviceGraph) -> Result<Tape> {
        let (n, e, m, h) = (g.n, g.e, g.m, cfg.hidden);
        let mut off = BTreeMap::new();
        let mut total = 0;
        let mut add = |name: String, len: usize| {
            off.insert(name, (total, len));
            total += len;
        };
        for i in 0..=cfg.layers {
            add(format!("x{i}"), n * h);
            add(format!("e{i}"), e * h);
        }
        for i in 0..cfg.layers {
            for (k, len) in [
                ("ax", n * h),
                ("bx", n * h),
                ("z", e * h),
                ("hz", e * h),
                ("fwd", n * h),
                ("bwd", n * h),
                ("u", n * h),
                ("hu", n * h),
                ("xres", n * h),
                ("ln_out", n * h),
                ("stats", 2 * n),
                ("gb", m * 2 * h),
            ] {
                add(format!("layer{i}.{k}"), len);
            }
        }
        for (k, len) in [
            ("eh_pre", e * h),
            ("eh", e * h),
            ("nh_pre", n * h),
            ("nh", n * h),
            // Edge then node outputs, adjacent: one head row per edge, then per node.
            ("edge_out", e * HEAD_OUT),
            ("node_out", n * HEAD_OUT),
            ("edge_weight", e),
            ("node_feat", n * NODE_FEATURES),
        ] {
            add(k.to_string(), len);
        }
        Ok(Tape {
            acts: dev.alloc(total)?,
            dacts: dev.alloc(total)?,
            off,
        })
    }
    pub fn a(&self, name: &str) -> View<'_> {
        let (o, l) = self.off[name];
        self.acts.view(o, l)
    }
    /// The head outputs of every edge, then of every node: [E + N, 2].
    pub fn head(&self) -> View<'_> {
        let (o, _) = self.off["edge_out"];
        let (o2, l2) = self.off["node_out"];
        self.acts.view(o, o2 + l2 - o)
    }
    /// The gradient of `head()`.
    pub fn dhead(&self) -> View<'_> {
        let (o, _) = self.off["edge_out"];
        let (o2, l2) = self.off["node_out"];
        self.dacts.view(o, o2 + l2 - o)
    }
    /// The gradient of the activation `name`.
    pub fn g(&self, name: &str) -> View<'_> {
        let (o, l) = self.off[name];
        self.dacts.view(o, l)
    }
}

/// out [rows, n] (+)= x [rows, k] @ w^T, w [n, k].
fn lin(
    dev: &Device,
    (rows, k, n): (usize, usize, usize),
    x: View,
    w: View,
    out: View,
    acc: bool,
) -> Result<()> {
    let g = Gemm {
        batch: 1,
        m: rows,
        n,
        k,
        trans_a: false,
        trans_b: true,
        a_stride: 0,
        b_stride: 0,
        c_stride: 0,
        accumulate: acc,
    };
    gemm(dev, &g, x, w, out)
}
/// dw [n, k] = dy [rows, n]^T @ x [rows, k].
fn lin_dw(
    dev: &Device,
    rows: usize,
    k: usize,
    n: usize,
    dy: View,
    x: View,
    dw: View,
) -> Result<()> {
    let g = Gemm {
        batch: 1,
        m: n,
        n: k,
        k: rows,
        trans_a: true,
        trans_b: false,
        a_stride: 0,
        b_stride: 0,
        c_stride: 0,
        accumulate: false,
    };
    gemm(dev, &g, dy, x, dw)
}
/// dx [rows, k] (+)= dy [rows, n] @ w [n, k].
fn lin_dx(
    dev: &Device,
    (rows, k, n): (usize, usize, usize),
    dy: View,
    w: View,
    dx: View,
    acc: bool,
) -> Result<()> {
    let g = Gemm {
        batch: 1,
        m: rows,
        n: k,
        k: n,
        trans_a: false,
        trans_b: false,
        a_stride: 0,
        b_stride: 0,
        c_stride: 0,
        accumulate: acc,
    };
    gemm(dev, &g, dy, w, dx)
}
fn bias(dev: &Device, rows: usize, cols: usize, y: View, b: View) -> Result<()> {
    bias_add(
        dev,
        &BiasAdd {
            batch: 1,
            rows,
            cols,
            y_stride: 0,
            b_stride: 0,
        },
        y,
        b,
    )
}
fn bias_grad(dev: &Device, rows: usize, cols: usize, dy: View, db: View) -> Result<()> {
    reduce(dev, &Reduce::new(Axis::Cols, 1, rows, cols), dy, db)
}

const ACT: Activation = Activation::Silu;

impl Editor {
    /// A fresh editor: linear layers as PyTorch initialises them, LayerNorm at (1, 0), FiLM and
    /// the heads' last layers at zero, so it starts as the identity edit.
    pub fn new(dev: &Device, cfg: &EditorConfig, seed: u64) -> Result<Editor> {
        let layout = ParamLayout::new(cfg);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut p = vec![0.0f32; layout.total];
        for (name, shape, off) in &layout.entries {
            let len: usize = shape.iter().product();
            let v = &mut p[*off..off + len];
            let last = name.rsplit('.').next().unwrap();
            if name == "embed" {
                v.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0));
            } else if last == "ln" {
                v[..len / 2].fill(1.0);
            } else if last.starts_with("film")
                || name.ends_with("head.w2")
                || name.ends_with("head.b2")
            {
                // zero
            } else {
                let fan_in = if shape.len() == 2 {
                    shape[1]
                } else {
                    cfg.hidden
                };
                let b = 1.0 / (fan_in as f32).sqrt();
                v.iter_mut().for_each(|x| *x = rng.random_range(-b..b));
            }
        }
        Editor::from_params(dev, cfg, &p)
    }

    pub fn from_params(dev: &Device, cfg: &EditorConfig, params: &[f32]) -> Result<Editor> {
        let layout = ParamLayout::new(cfg);
        assert_eq!(params.len(), layout.total, "editor parameter count");
        Ok(Editor {
            cfg: cfg.clone(),
            params: dev.upload(params)?,
            grads: dev.alloc(layout.total)?,
            opt_state: dev.alloc(2 * layout.total)?,
            layout,
            step: 0,
        })
    }

    fn p(&self, name: &str) -> View<'_> {
        let (o, l) = self.layout.get(name);
        self.params.view(o, l)
    }
    fn dp(&self, name: &str) -> View<'_> {
        let (o, l) = self.layout.get(name);
        self.grads.view(o, l)
    }

    /// Run the editor on a graph; outputs land in the tape's `edge_out` [E, 2] and `node_out` [N, 2].
    pub fn forward(&self, dev: &Device, g: &DeviceGraph, t: &Tape) -> Result<()> {
        let e = g.e;
        self.node_input(dev, g, t.a("x0"))?;
        self.edge_input(dev, g.d("edge_weight"), t.a("e0"))?;
        for i in 0..self.cfg.layers {
            let (x, ed, x1, e1) = (
                t.a(&format!("x{i}")),
                t.a(&format!("e{i}")),
                t.a(&format!("x{}", i + 1)),
                t.a(&format!("e{}", i + 1)),
            );
            let a = |k: &str| t.a(&format!("layer{i}.{k}"));
            let acts = NodeActs {
                ax: a("ax"),
                bx: a("bx"),
                fwd: a("fwd"),
                bwd: a("bwd"),
                u: a("u"),
                hu: a("hu"),
                xres: a("xres"),
                ln_out: a("ln_out"),
                stats: a("stats"),
                gb: a("gb"),
            };
            self.node_projections(dev, g, i, x, &acts)?;
            let z = (a("z"), a("hz"));
            self.edge_update(dev, g, i, 0..e, &acts, ed, z, e1)?;
            self.aggregate(dev, g, e1, &acts, None)?;
            self.node_update(dev, g, i, x, &acts, x1)?;
        }
        let (xl, el) = (
            t.a(&format!("x{}", self.cfg.layers)),
            t.a(&format!("e{}", self.cfg.layers)),
        );
        self.head(
            dev,
            "edge_head",
            el,
            t.a("eh_pre"),
            t.a("eh"),
            t.a("edge_out"),
        )?;
        self.head(
            dev,
            "node_head",
            xl,
            t.a("nh_pre"),
            t.a("nh"),
            t.a("node_out"),
        )
    }

    /// The forward pass without a tape, for edits: node state whole, edge state in slices of
    /// their own buffers (see `InferBuffers`), so a model with more edges than the adapter's
    /// largest buffer holds still runs. Returns what `forward` leaves in `Tape::head`: the head
    /// outputs of every edge, then of every node, [E + N, 2].
    pub fn infer(&self, dev: &Device, g: &DeviceGraph, b: &InferBuffers) -> Result<Vec<f32>> {
        let (n, e, h) = (g.n, g.e, self.cfg.hidden);
        let nh = n * h;
        let at = |k: usize| b.nodes.view(k * nh, nh);
        let acts = NodeActs {
            ax: at(2),
            bx: at(3),
            fwd: at(4),
            bwd: at(5),
            u: at(6),
            hu: at(7),
            xres: at(8),
            ln_out: at(9),
            stats: b.nodes.view(10 * nh, 2 * n),
            gb: b.nodes.view(10 * nh + 2 * n, g.m * 2 * h),
        };
        let scratch = |len: usize| (b.z.view(0, len * h), b.hz.view(0, len * h));
        // Layer i reads node state at(i % 2) and edge state edges[i % 2], writes the other.
        self.node_input(dev, g, at(0))?;
        for (r, buf) in b.slices.iter().zip(&b.edges[0]) {
            let w = g.d("edge_weight").sub(r.start, r.len());
            self.edge_input(dev, w, buf.all())?;
        }
        for i in 0..self.cfg.layers {
            let (x, x1) = (at(i % 2), at((i + 1) % 2));
            let (cur, next) = (&b.edges[i % 2], &b.edges[(i + 1) % 2]);
            self.node_projections(dev, g, i, x, &acts)?;
            for (k, r) in b.slices.iter().enumerate() {
                let (ed, e1) = (cur[k].all(), next[k].all());
                self.edge_update(dev, g, i, r.clone(), &acts, ed, scratch(r.len()), e1)?;
                self.aggregate(dev, g, e1, &acts, Some((k, r.clone())))?;
            }
            self.node_update(dev, g, i, x, &acts, x1)?;
        }
        // Edge heads slice by slice, node heads with ax, bx as scratch; one read of them all.
        let last = self.cfg.layers % 2;
        for (r, buf) in b.slices.iter().zip(&b.edges[last]) {
            let (pre, hid) = scratch(r.len());
            let out = b.out.view(r.start * HEAD_OUT, r.len() * HEAD_OUT);
            self.head(dev, "edge_head", buf.all(), pre, hid, out)?;
        }
        let out = b.out.view(e * HEAD_OUT, n * HEAD_OUT);
        self.head(dev, "node_head", at(last), acts.ax, acts.bx, out)?;
        dev.read_all(&b.out)
    }

    /// x0 = embedding of each node's position + linear of its features (bias, flags).
    fn node_input(&self, dev: &Device, g: &DeviceGraph, x0: View) -> Result<()> {
        let (n, h) = (g.n, self.cfg.hidden);
        gather_rows(dev, h, self.p("embed"), g.i("pos"), x0)?;
        let w = self.p("node_in.w");
        lin(dev, (n, NODE_FEATURES, h), g.d("node_feat"), w, x0, true)?;
        bias(dev, n, h, x0, self.p("node_in.b"))
    }

    /// e0 = linear of each edge's weight.
    fn edge_input(&self, dev: &Device, weight: View, e0: View) -> Result<()> {
        let (e, h) = (weight.len, self.cfg.hidden);
        lin(dev, (e, 1, h), weight, self.p("edge_in.w"), e0, false)?;
        bias(dev, e, h, e0, self.p("edge_in.b"))
    }

    /// A x and B x of layer `i`, once per node, for the edge update to gather.
    fn node_projections(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        i: usize,
        x: View,
        a: &NodeActs,
    ) -> Result<()> {
        let (n, h) = (g.n, self.cfg.hidden);
        let w = |k: &str| self.p(&format!("layer{i}.{k}"));
        lin(dev, (n, h, h), x, w("src_w"), a.ax, false)?;
        lin(dev, (n, h, h), x, w("dst_w"), a.bx, false)
    }

    /// Edge update of layer `i` for the edges `r`: `ed` and `e1` hold just those edges; `z`
    /// is (pre-activation, activation) scratch of the same size.
    #[allow(clippy::too_many_arguments)]
    fn edge_update(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        i: usize,
        r: std::ops::Range<usize>,
        a: &NodeActs,
        ed: View,
        (z, hz): (View, View),
        e1: View,
    ) -> Result<()> {
        let (e, h) = (r.len(), self.cfg.hidden);
        let w = |k: &str| self.p(&format!("layer{i}.{k}"));
        gather_rows(dev, h, a.ax, g.i("src").sub(r.start, e), z)?;
        let acc = GatherOpts {
            accumulate: true,
            scale: None,
        };
        gather_rows_with(dev, h, a.bx, g.i("dst").sub(r.start, e), z, acc)?;
        lin(dev, (e, h, h), ed, w("edge_w"), z, true)?;
        bias(dev, e, h, z, w("edge_b"))?;
        activation_forward(dev, ACT, z, hz)?;
        lin(dev, (e, h, h), hz, w("msg_w"), e1, false)?;
        bias(dev, e, h, e1, w("msg_b"))?;
        axpy(dev, 1.0, ed, 1.0, e1)
    }

    /// Mean of the new edge states over each node's in-edges (fwd) and out-edges (bwd). With
    /// `slice` = (k, edges), `e1` holds only those edges and slice k > 0 adds to slice 0's sums.
    fn aggregate(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        e1: View,
        a: &NodeActs,
        slice: Option<(usize, std::ops::Range<usize>)>,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let (window, accumulate) = match slice {
            Some((k, r)) => (Some((r.start, r.end)), k > 0),
            None => (None, false),
        };
        let o = SegmentOpts {
            mean: true,
            accumulate,
            window,
            perm: None,
        };
        segment_reduce(dev, h, e1, g.i("dst_offsets"), a.fwd, o)?;
        let by_src = SegmentOpts {
            perm: Some(g.i("src_perm")),
            ..o
        };
        segment_reduce(dev, h, e1, g.i("src_offsets"), a.bwd, by_src)
    }

    /// Node update of layer `i`: x1 = FiLM(LayerNorm(x + W_o silu(U_x x + U_f fwd + U_b bwd))).
    fn node_update(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        i: usize,
        x: View,
        a: &NodeActs,
        x1: View,
    ) -> Result<()> {
        let (n, m, h, c) = (g.n, g.m, self.cfg.hidden, self.cfg.cond_dim);
        let w = |k: &str| self.p(&format!("layer{i}.{k}"));
        lin(dev, (n, h, h), x, w("node_x"), a.u, false)?;
        lin(dev, (n, h, h), a.fwd, w("node_f"), a.u, true)?;
        lin(dev, (n, h, h), a.bwd, w("node_r"), a.u, true)?;
        bias(dev, n, h, a.u, w("node_b"))?;
        activation_forward(dev, ACT, a.u, a.hu)?;
        lin(dev, (n, h, h), a.hu, w("out_w"), a.xres, false)?;
        bias(dev, n, h, a.xres, w("out_b"))?;
        axpy(dev, 1.0, x, 1.0, a.xres)?;
        layernorm_forward(dev, h, a.xres, w("ln"), a.ln_out, a.stats)?;
        lin(dev, (m, c, 2 * h), g.d("cond"), w("film_w"), a.gb, false)?;
        bias(dev, m, 2 * h, a.gb, w("film_b"))?;
        film_forward(dev, h, self.rows(g), a.ln_out, a.gb, x1)
    }

    /// A head: out = W2 silu(W1 input + b1) + b2, one row per edge or node of `input`.
    fn head(
        &self,
        dev: &Device,
        head: &str,
        input: View,
        pre: View,
        hid: View,
        out: View,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let rows = input.len / h;
        let p = |k: &str| self.p(&format!("{head}.{k}"));
        lin(dev, (rows, h, h), input, p("w1"), pre, false)?;
        bias(dev, rows, h, pre, p("b1"))?;
        activation_forward(dev, ACT, pre, hid)?;
        lin(dev, (rows, h, HEAD_OUT), hid, p("w2"), out, false)?;
        bias(dev, rows, HEAD_OUT, out, p("b2"))
    }

    fn rows<'a>(&self, g: &'a DeviceGraph) -> RowModels<'a> {
        RowModels {
            row_model: g.i("node_model"),
            row_offsets: g.i("node_offsets"),
        }
    }

    /// Backpropagate the output gradients the caller put in the gradient tape (`edge_out`,
    /// `node_out`) into `grads` (all overwritten) and into the inputs: the tape's `edge_weight`
    /// [E] and `node_feat` [N, 3] gradients. Needs the activations of the last `forward`.
    pub fn backward(&self, dev: &Device, g: &DeviceGraph, t: &Tape) -> Result<()> {
        let (n, e, m, h, c, layers) = (
            g.n,
            g.e,
            g.m,
            self.cfg.hidden,
            self.cfg.cond_dim,
            self.cfg.layers,
        );
        let (xl, el) = (format!("x{layers}"), format!("e{layers}"));
        for (head, rows, input, pre, hid, out) in [
            ("edge_head", e, &el, "eh_pre", "eh", "edge_out"),
            ("node_head", n, &xl, "nh_pre", "nh", "node_out"),
        ] {
            let dp = |k: &str| self.dp(&format!("{head}.{k}"));
            lin_dw(dev, rows, h, HEAD_OUT, t.g(out), t.a(hid), dp("w2"))?;
            bias_grad(dev, rows, HEAD_OUT, t.g(out), dp("b2"))?;
            lin_dx(
                dev,
                (rows, h, HEAD_OUT),
                t.g(out),
                self.p(&format!("{head}.w2")),
                t.g(hid),
                false,
            )?;
            activation_backward(dev, ACT, t.a(pre), t.g(hid), t.g(pre))?;
            lin_dw(dev, rows, h, h, t.g(pre), t.a(input), dp("w1"))?;
            bias_grad(dev, rows, h, t.g(pre), dp("b1"))?;
            lin_dx(
                dev,
                (rows, h, h),
                t.g(pre),
                self.p(&format!("{head}.w1")),
                t.g(input),
                false,
            )?;
        }
        for i in (0..layers).rev() {
            let (xk, ek, x1k, e1k) = (
                format!("x{i}"),
                format!("e{i}"),
                format!("x{}", i + 1),
                format!("e{}", i + 1),
            );
            let a = |k: &str| t.a(&format!("layer{i}.{k}"));
            let d = |k: &str| t.g(&format!("layer{i}.{k}"));
            let w = |k: &str| self.p(&format!("layer{i}.{k}"));
            let dw = |k: &str| self.dp(&format!("layer{i}.{k}"));
            // FiLM and LayerNorm.
            film_backward(
                dev,
                h,
                self.rows(g),
                a("ln_out"),
                a("gb"),
                t.g(&x1k),
                d("ln_out"),
                d("gb"),
                false,
            )?;
            lin_dw(dev, m, c, 2 * h, d("gb"), g.d("cond"), dw("film_w"))?;
            bias_grad(dev, m, 2 * h, d("gb"), dw("film_b"))?;
            layernorm_backward(
                dev,
                h,
                a("xres"),
                w("ln"),
                a("stats"),
                d("ln_out"),
                d("xres"),
                dw("ln"),
                false,
            )?;
            // Node update (the residual passes d xres straight to x).
            copy(dev, d("xres"), t.g(&xk))?;
            lin_dw(dev, n, h, h, d("xres"), a("hu"), dw("out_w"))?;
            bias_grad(dev, n, h, d("xres"), dw("out_b"))?;
            lin_dx(dev, (n, h, h), d("xres"), w("out_w"), d("hu"), false)?;
            activation_backward(dev, ACT, a("u"), d("hu"), d("u"))?;
            lin_dw(dev, n, h, h, d("u"), t.a(&xk), dw("node_x"))?;
            lin_dw(dev, n, h, h, d("u"), a("fwd"), dw("node_f"))?;
            lin_dw(dev, n, h, h, d("u"), a("bwd"), dw("node_r"))?;
            bias_grad(dev, n, h, d("u"), dw("node_b"))?;
            lin_dx(dev, (n, h, h), d("u"), w("node_x"), t.g(&xk), true)?;
            lin_dx(dev, (n, h, h), d("u"), w("node_f"), d("fwd"), false)?;
            lin_dx(dev, (n, h, h), d("u"), w("node_r"), d("bwd"), false)?;
            // Aggregation: each edge receives its destination's (source's) gradient / degree.
            let de1 = t.g(&e1k);
            gather_rows_with(
                dev,
                h,
                d("fwd"),
                g.i("dst"),
                de1,
                GatherOpts {
                    accumulate: true,
                    scale: Some(g.d("inv_in")),
                },
            )?;
            gather_rows_with(
                dev,
                h,
                d("bwd"),
                g.i("src"),
                de1,
                GatherOpts {
                    accumulate: true,
                    scale: Some(g.d("inv_out")),
                },
            )?;
            // Edge update (the residual passes d e1 straight to e).
            copy(dev, de1, t.g(&ek))?;
            lin_dw(dev, e, h, h, de1, a("hz"), dw("msg_w"))?;
            bias_grad(dev, e, h, de1, dw("msg_b"))?;
            lin_dx(dev, (e, h, h), de1, w("msg_w"), d("hz"), false)?;
            activation_backward(dev, ACT, a("z"), d("hz"), d("z"))?;
            bias_grad(dev, e, h, d("z"), dw("edge_b"))?;
            lin_dw(dev, e, h, h, d("z"), t.a(&ek), dw("edge_w"))?;
            lin_dx(dev, (e, h, h), d("z"), w("edge_w"), t.g(&ek), true)?;
            // A x and B x were gathered to edges: their gradients are sums over each node's edges.
            segment_reduce(
                dev,
                h,
                d("z"),
                g.i("src_offsets"),
                d("ax"),
                SegmentOpts {
                    perm: Some(g.i("src_perm")),
                    ..Default::default()
                },
            )?;
            segment_reduce(
                dev,
                h,
                d("z"),
                g.i("dst_offsets"),
                d("bx"),
                SegmentOpts::default(),
            )?;
            lin_dw(dev, n, h, h, d("ax"), t.a(&xk), dw("src_w"))?;
            lin_dw(dev, n, h, h, d("bx"), t.a(&xk), dw("dst_w"))?;
            lin_dx(dev, (n, h, h), d("ax"), w("src_w"), t.g(&xk), true)?;
            lin_dx(dev, (n, h, h), d("bx"), w("dst_w"), t.g(&xk), true)?;
        }
        // Inputs.
        lin_dw(
            dev,
            e,
            1,
            h,
            t.g("e0"),
            g.d("edge_weight"),
            self.dp("edge_in.w"),
        )?;
        bias_grad(dev, e, h, t.g("e0"), self.dp("edge_in.b"))?;
        lin_dx(
            dev,
            (e, 1, h),
            t.g("e0"),
            self.p("edge_in.w"),
            t.g("edge_weight"),
            false,
        )?;
        lin_dw(
            dev,
            n,
            NODE_FEATURES,
            h,
            t.g("x0"),
            g.d("node_feat"),
            self.dp("node_in.w"),
        )?;
        bias_grad(dev, n, h, t.g("x0"), self.dp("node_in.b"))?;
        lin_dx(
            dev,
            (n, NODE_FEATURES, h),
            t.g("x0"),
            self.p("node_in.w"),
            t.g("node_feat"),
            false,
        )?;
        segment_reduce(
            dev,
            h,
            t.g("x0"),
            g.i("pos_offsets"),
            self.dp("embed"),
            SegmentOpts {
                perm: Some(g.i("pos_perm")),
                ..Default::default()
            },
        )
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

    /// Save parameters, optimiser state and configuration (plus caller metadata, e.g. the
    /// dataset schema) as safetensors; atomic.
    pub fn save(
        &self,
        dev: &Device,
        path: &Path,
        extra: &BTreeMap<String, String>,
        force: bool,
    ) -> Result<()> {
        let params = dev.read_all(&self.params)?;
        let state = dev.read_all(&self.opt_state)?;
        let n = self.layout.total;
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .layout
            .entries
            .iter()
            .map(|(name, shape, off)| {
                (
                    name.clone(),
                    shape.clone(),
                    bytemuck::cast_slice(&params[*off..off + shape.iter().product::<usize>()])
                        .to_vec(),
                )
            })
            .collect();
        data.push((
            "optimizer.m".into(),
            vec![n],
            bytemuck::cast_slice(&state[..n]).to_vec(),
        ));
        data.push((
            "optimizer.v".into(),
            vec![n],
            bytemuck::cast_slice(&state[n..]).to_vec(),
        ));
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        let mut meta: std::collections::HashMap<String, String> =
            extra.clone().into_iter().collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("config".into(), serde_json::to_string(&self.cfg).unwrap());
        meta.insert("step".into(), self.step.to_string());
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Usage(format!("serialising editor: {e}")))?;
        // Sorted header: one editor state always gives the same bytes.
        crate::io::write_atomic(path, &crate::io::model::canonical_header(&bytes), force)
    }

    /// Load a checkpoint; returns the editor and the file's metadata.
    pub fn load(dev: &Device, path: &Path) -> Result<(Editor, BTreeMap<String, String>)> {
        let bytes = crate::io::read(path)?;
        let bad = |m: String| Error::input(path, m);
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors editor checkpoint: {e}")))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "not a regop editor (format {:?}, expected {FORMAT})",
                meta.get("format")
            )));
        }
        let cfg: EditorConfig = serde_json::from_str(
            meta.get("config")
                .ok_or_else(|| bad("no config in metadata".into()))?,
        )
        .map_err(|e| bad(format!("bad config: {e}")))?;
        let layout = ParamLayout::new(&cfg);
        let read = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor '{name}'")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.data().len() != 4 * len {
                return Err(bad(format!("tensor '{name}' has the wrong dtype or size")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect())
        };
        let mut params = vec![0.0f32; layout.total];
        for (name, shape, off) in &layout.entries {
            let len = shape.iter().product();
            params[*off..off + len].copy_from_slice(&read(name, len)?);
        }
        let mut ed = Editor::from_params(dev, &cfg, &params)?;
        let (m, v) = (
            read("optimizer.m", layout.total)?,
            read("optimizer.v", layout.total)?,
        );
        dev.write(&ed.opt_state, 0, &[m, v].concat())?;
        ed.step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((ed, meta))
    }
}
