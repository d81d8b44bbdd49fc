//! Where the editor's inputs and activations live: the graph batch on the device
//! (`DeviceGraph`), the tape of a training step (`Tape`: every activation, and a gradient
//! buffer of the same layout), and the smaller buffers of an edit (`InferBuffers`). Each holds
//! typed spans; `NodeActs` and `EdgeSlice` are one layer's views, whichever holds them.

use super::params::Span;
use super::{EditorConfig, HEAD_OUT};
use crate::engine::buffer::{Buf, View};
use crate::engine::device::Device;
use crate::error::Result;
use crate::networks::graph::{GraphBatch, NODE_FEATURES};

/// Lays spans out one after another in one buffer.
#[derive(Default)]
struct Packer {
    total: usize,
}

impl Packer {
    fn add(&mut self, len: usize) -> Span {
        let s = Span {
            offset: self.total,
            len,
        };
        self.total += len;
        s
    }
}

/// Where each array of a graph batch is: indices (u32) in one buffer, inputs (f32) in another.
#[derive(Clone, Copy, Debug)]
struct GraphSpans {
    src: Span,
    dst: Span,
    dst_offsets: Span,
    src_perm: Span,
    src_offsets: Span,
    pos: Span,
    pos_perm: Span,
    pos_offsets: Span,
    node_model: Span,
    node_offsets: Span,
    node_feat: Span,
    edge_feat: Span,
    inv_in: Span,
    inv_out: Span,
    cond: Span,
}

/// A graph batch on the device (see `GraphBatch` for what each array holds).
pub struct DeviceGraph {
    pub n: usize,
    pub e: usize,
    pub m: usize,
    pub idx: Buf,
    pub data: Buf,
    at: GraphSpans,
}

impl DeviceGraph {
    pub fn upload(dev: &Device, g: &GraphBatch) -> Result<DeviceGraph> {
        let (mut idx, mut data) = (Vec::new(), Vec::new());
        let mut put_idx = |v: &[u32]| {
            idx.extend_from_slice(v);
            Span {
                offset: idx.len() - v.len(),
                len: v.len(),
            }
        };
        let (src, dst, dst_offsets) = (put_idx(&g.src), put_idx(&g.dst), put_idx(&g.dst_offsets));
        let (src_perm, src_offsets) = (put_idx(&g.src_perm), put_idx(&g.src_offsets));
        let (pos, pos_perm, pos_offsets) = (
            put_idx(&g.node_pos),
            put_idx(&g.pos_perm),
            put_idx(&g.pos_offsets),
        );
        let (node_model, node_offsets) = (put_idx(&g.node_model), put_idx(&g.node_offsets));
        let mut put_data = |v: &[f32]| {
            data.extend_from_slice(v);
            Span {
                offset: data.len() - v.len(),
                len: v.len(),
            }
        };
        let (node_feat, edge_feat) = (put_data(&g.node_feat), put_data(&g.edge_feat));
        let (inv_in, inv_out) = (put_data(&g.inv_in_deg), put_data(&g.inv_out_deg));
        let cond = put_data(&g.cond);
        Ok(DeviceGraph {
            n: g.nodes(),
            e: g.edges(),
            m: g.models(),
            idx: dev.upload_u32(&idx)?,
            data: dev.upload(&data)?,
            at: GraphSpans {
                src,
                dst,
                dst_offsets,
                src_perm,
                src_offsets,
                pos,
                pos_perm,
                pos_offsets,
                node_model,
                node_offsets,
                node_feat,
                edge_feat,
                inv_in,
                inv_out,
                cond,
            },
        })
    }
    /// Source and destination node of every edge.
    pub fn src(&self) -> View<'_> {
        self.at.src.of(&self.idx)
    }
    pub fn dst(&self) -> View<'_> {
        self.at.dst.of(&self.idx)
    }
    /// CSR over edges by destination (edges are sorted so), and by source through `src_perm`.
    pub fn dst_offsets(&self) -> View<'_> {
        self.at.dst_offsets.of(&self.idx)
    }
    pub fn src_perm(&self) -> View<'_> {
        self.at.src_perm.of(&self.idx)
    }
    pub fn src_offsets(&self) -> View<'_> {
        self.at.src_offsets.of(&self.idx)
    }
    /// Positional id of every node, and the CSR over ids through `pos_perm`.
    pub fn pos(&self) -> View<'_> {
        self.at.pos.of(&self.idx)
    }
    pub fn pos_perm(&self) -> View<'_> {
        self.at.pos_perm.of(&self.idx)
    }
    pub fn pos_offsets(&self) -> View<'_> {
        self.at.pos_offsets.of(&self.idx)
    }
    /// Model of every node, and where each model's nodes start.
    pub fn node_model(&self) -> View<'_> {
        self.at.node_model.of(&self.idx)
    }
    pub fn node_offsets(&self) -> View<'_> {
        self.at.node_offsets.of(&self.idx)
    }
    /// Node features [N, NODE_FEATURES], edge features [E, edge features], 1 / degrees [N],
    /// conditioning [M, c].
    pub fn node_feat(&self) -> View<'_> {
        self.at.node_feat.of(&self.data)
    }
    pub fn edge_feat(&self) -> View<'_> {
        self.at.edge_feat.of(&self.data)
    }
    pub fn inv_in(&self) -> View<'_> {
        self.at.inv_in.of(&self.data)
    }
    pub fn inv_out(&self) -> View<'_> {
        self.at.inv_out.of(&self.data)
    }
    pub fn cond(&self) -> View<'_> {
        self.at.cond.of(&self.data)
    }
}

/// One layer's node-level activations.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpans {
    /// A x and B x, once per node, for the edges to gather.
    pub ax: Span,
    pub bx: Span,
    /// Mean edge state over in-edges and over out-edges.
    pub fwd: Span,
    pub bwd: Span,
    /// The node MLP's pre-activation and activation, the residual sum, LayerNorm's output and
    /// (mean, rstd) per node, FiLM's (gamma, beta) per model.
    pub u: Span,
    pub hu: Span,
    pub xres: Span,
    pub ln_out: Span,
    pub stats: Span,
    pub gb: Span,
}

impl NodeSpans {
    fn new(p: &mut Packer, n: usize, m: usize, h: usize) -> NodeSpans {
        let nh = n * h;
        NodeSpans {
            ax: p.add(nh),
            bx: p.add(nh),
            fwd: p.add(nh),
            bwd: p.add(nh),
            u: p.add(nh),
            hu: p.add(nh),
            xres: p.add(nh),
            ln_out: p.add(nh),
            stats: p.add(2 * n),
            gb: p.add(m * 2 * h),
        }
    }
    /// These activations in `buf`.
    pub fn of(self, buf: &Buf) -> NodeActs<'_> {
        NodeActs {
            ax: self.ax.of(buf),
            bx: self.bx.of(buf),
            fwd: self.fwd.of(buf),
            bwd: self.bwd.of(buf),
            u: self.u.of(buf),
            hu: self.hu.of(buf),
            xres: self.xres.of(buf),
            ln_out: self.ln_out.of(buf),
            stats: self.stats.of(buf),
            gb: self.gb.of(buf),
        }
    }
}

/// One layer's node-level activations (or their gradients) as views.
#[derive(Clone, Copy)]
pub struct NodeActs<'a> {
    pub ax: View<'a>,
    pub bx: View<'a>,
    pub fwd: View<'a>,
    pub bwd: View<'a>,
    pub u: View<'a>,
    pub hu: View<'a>,
    pub xres: View<'a>,
    pub ln_out: View<'a>,
    pub stats: View<'a>,
    pub gb: View<'a>,
}

/// The edges `range` of one layer: their state before (`e`) and after (`e1`) the layer, and
/// the edge MLP's pre-activation `z` and activation `hz`, each holding just those edges.
#[derive(Clone)]
pub struct EdgeSlice<'a> {
    pub range: std::ops::Range<usize>,
    pub e: View<'a>,
    pub e1: View<'a>,
    pub z: View<'a>,
    pub hz: View<'a>,
}

/// One layer's edge-level activations in a tape.
#[derive(Clone, Copy, Debug)]
pub struct EdgeSpans {
    pub z: Span,
    pub hz: Span,
}

/// Where every activation of a training step is, in the tape's activation buffer and, with the
/// same layout, in its gradient buffer.
#[derive(Clone, Debug)]
pub struct TapeLayout {
    /// Node and edge state entering each layer, and leaving the last: layers + 1 of each.
    pub x: Vec<Span>,
    pub e: Vec<Span>,
    pub nodes: Vec<NodeSpans>,
    pub edges: Vec<EdgeSpans>,
    /// The heads' pre-activations and activations.
    pub eh_pre: Span,
    pub eh: Span,
    pub nh_pre: Span,
    pub nh: Span,
    /// Head outputs: one row per edge, then (adjacent) one per node.
    pub edge_out: Span,
    pub node_out: Span,
    /// The graph's inputs, whose gradients `Editor::backward` also gives.
    pub edge_feat: Span,
    pub node_feat: Span,
}

/// Every activation of a training step, and its gradient.
pub struct Tape {
    pub acts: Buf,
    pub dacts: Buf,
    pub at: TapeLayout,
}

impl Tape {
    pub fn new(dev: &Device, cfg: &EditorConfig, g: &DeviceGraph) -> Result<Tape> {
        let (n, e, m, h) = (g.n, g.e, g.m, cfg.hidden);
        let mut p = Packer::default();
        let (mut x, mut es) = (Vec::new(), Vec::new());
        for _ in 0..=cfg.layers {
            x.push(p.add(n * h));
            es.push(p.add(e * h));
        }
        let (mut nodes, mut edges) = (Vec::new(), Vec::new());
        for _ in 0..cfg.layers {
            nodes.push(NodeSpans::new(&mut p, n, m, h));
            edges.push(EdgeSpans {
                z: p.add(e * h),
                hz: p.add(e * h),
            });
        }
        let at = TapeLayout {
            x,
            e: es,
            nodes,
            edges,
            eh_pre: p.add(e * h),
            eh: p.add(e * h),
            nh_pre: p.add(n * h),
            nh: p.add(n * h),
            edge_out: p.add(e * HEAD_OUT),
            node_out: p.add(n * HEAD_OUT),
            edge_feat: p.add(e * cfg.edge_features),
            node_feat: p.add(n * NODE_FEATURES),
        };
        Ok(Tape {
            acts: dev.alloc(p.total)?,
            dacts: dev.alloc(p.total)?,
            at,
        })
    }
    /// An activation.
    pub fn a(&self, s: Span) -> View<'_> {
        s.of(&self.acts)
    }
    /// The gradient of an activation.
    pub fn g(&self, s: Span) -> View<'_> {
        s.of(&self.dacts)
    }
    /// The head outputs of every edge, then of every node: [E + N, 2].
    pub fn head(&self) -> View<'_> {
        self.acts.view(self.at.edge_out.offset, self.head_len())
    }
    /// The gradient of `head()`.
    pub fn dhead(&self) -> View<'_> {
        self.dacts.view(self.at.edge_out.offset, self.head_len())
    }
    fn head_len(&self) -> usize {
        self.at.edge_out.len + self.at.node_out.len
    }
    /// Layer `i`'s one slice of edges: all of them.
    pub(super) fn edge_slice(&self, i: usize) -> EdgeSlice<'_> {
        let e = self.at.edges[i];
        EdgeSlice {
            range: 0..self.at.edge_out.len / HEAD_OUT,
            e: self.a(self.at.e[i]),
            e1: self.a(self.at.e[i + 1]),
            z: self.a(e.z),
            hz: self.a(e.hz),
        }
    }
}

/// The buffers of `Editor::infer` on one graph. Node state is whole, in one buffer (x twice,
/// to alternate layers, and one layer's activations: about 10 x hidden floats per node). Edge
/// state, twice as well, is cut into slices of at most `slice_edges` edges, one buffer each.
pub struct InferBuffers {
    pub(super) slices: Vec<std::ops::Range<usize>>,
    pub(super) nodes: Buf,
    /// x of even and odd layers, then one layer's node activations.
    pub(super) x: [Span; 2],
    pub(super) acts: NodeSpans,
    pub(super) edges: [Vec<Buf>; 2],
    /// One slice's pre-activation and activation; `out` the head rows of every edge, then of
    /// every node.
    pub(super) z: Buf,
    pub(super) hz: Buf,
    pub(super) out: Buf,
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
        let mut p = Packer::default();
        let x = [p.add(n * h), p.add(n * h)];
        let acts = NodeSpans::new(&mut p, n, m, h);
        Ok(InferBuffers {
            nodes: dev.alloc(p.total)?,
            x,
            acts,
            edges: [edge_state()?, edge_state()?],
            z: dev.alloc(step * h)?,
            hz: dev.alloc(step * h)?,
            out: dev.alloc((e + n) * HEAD_OUT)?,
            slices,
        })
    }
    /// Layer `i`'s edge slices: state read from one set of buffers, written to the other.
    pub(super) fn edge_slices(&self, i: usize, h: usize) -> Vec<EdgeSlice<'_>> {
        let (cur, next) = (&self.edges[i % 2], &self.edges[(i + 1) % 2]);
        self.slices
            .iter()
            .enumerate()
            .map(|(k, r)| EdgeSlice {
                range: r.clone(),
                e: cur[k].all(),
                e1: next[k].all(),
                z: self.z.view(0, r.len() * h),
                hz: self.hz.view(0, r.len() * h),
            })
            .collect()
    }
}
