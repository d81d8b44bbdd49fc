//! The editor's parameters: named tensors packed in one buffer, in a fixed order, with a typed
//! handle for each (`EditorParams`), how each starts (`Init`), and the names its checkpoints use.

use super::{EditorConfig, HEAD_OUT};
use crate::engine::buffer::{Buf, View};
use crate::networks::graph::NODE_FEATURES;

/// `len` values at `offset` of a packed buffer: one tensor of the parameters (or of their
/// gradients, which have the same layout), or one activation of a tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    /// This span of `buf`.
    pub fn of(self, buf: &Buf) -> View<'_> {
        buf.view(self.offset, self.len)
    }
}

/// How a tensor starts in a fresh editor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1, 1): the positional embedding.
    Embedding,
    /// PyTorch's `nn.Linear` default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Linear { fan_in: usize },
    /// LayerNorm's gain 1 and shift 0.
    LayerNorm,
    /// Zero: FiLM (so conditioning starts neutral) and the heads' last layers (so the untrained
    /// editor is the identity edit).
    Zero,
}

/// One tensor's name (as checkpoints store it), shape, place and initialisation.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub span: Span,
    pub init: Init,
}

/// One message-passing layer (see the editor's module header for the formulas).
#[derive(Clone, Copy, Debug)]
pub struct LayerParams {
    /// Edge update: z = A x_src + B x_dst + C e + edge_b; e <- e + msg_w silu(z) + msg_b.
    pub src_w: Span,
    pub dst_w: Span,
    pub edge_w: Span,
    pub edge_b: Span,
    pub msg_w: Span,
    pub msg_b: Span,
    /// Node update: u = U_x x + U_f fwd + U_b bwd + node_b; x + out_w silu(u) + out_b.
    pub node_x: Span,
    pub node_f: Span,
    pub node_r: Span,
    pub node_b: Span,
    pub out_w: Span,
    pub out_b: Span,
    /// LayerNorm gain then shift, [2, hidden].
    pub ln: Span,
    /// FiLM from the conditioning vector: (gamma, beta) = film_w c + film_b, [2 hidden].
    pub film_w: Span,
    pub film_b: Span,
}

/// A head: out = w2 silu(w1 input + b1) + b2, HEAD_OUT values per row.
#[derive(Clone, Copy, Debug)]
pub struct HeadParams {
    pub w1: Span,
    pub b1: Span,
    pub w2: Span,
    pub b2: Span,
}

/// Every tensor of the editor, by role.
#[derive(Clone, Debug)]
pub struct EditorParams {
    /// Positional embedding, one row per positional id.
    pub embed: Span,
    /// Node input: node features (bias, removed flag, sensitive flag, signals) -> hidden.
    pub node_in_w: Span,
    pub node_in_b: Span,
    /// Edge input: the edge features (weight, gradient) -> hidden.
    pub edge_in_w: Span,
    pub edge_in_b: Span,
    pub layers: Vec<LayerParams>,
    pub edge_head: HeadParams,
    pub node_head: HeadParams,
    /// All of them in buffer order, with names and initialisation.
    pub entries: Vec<Entry>,
    pub total: usize,
}

/// Lays tensors out one after another, recording each entry.
struct Packer {
    entries: Vec<Entry>,
    total: usize,
}

impl Packer {
    fn add(&mut self, name: &str, shape: &[usize], init: Init) -> Span {
        let span = Span {
            offset: self.total,
            len: shape.iter().product(),
        };
        self.entries.push(Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            span,
            init,
        });
        self.total += span.len;
        span
    }
    /// A weight [out, in] initialised as `nn.Linear` does.
    fn weight(&mut self, name: &str, out: usize, fan_in: usize) -> Span {
        self.add(name, &[out, fan_in], Init::Linear { fan_in })
    }
    /// A bias [len] of a layer whose fan-in is `fan_in`.
    fn bias(&mut self, name: &str, len: usize, fan_in: usize) -> Span {
        self.add(name, &[len], Init::Linear { fan_in })
    }
}

impl EditorParams {
    pub fn new(cfg: &EditorConfig) -> EditorParams {
        let (h, c) = (cfg.hidden, cfg.cond_dim);
        let mut p = Packer {
            entries: Vec::new(),
            total: 0,
        };
        let embed = p.add("embed", &[cfg.pos.count(), h], Init::Embedding);
        // Biases are drawn with the hidden width as their fan-in, as the first editors were.
        let node_in_w = p.weight("node_in.w", h, NODE_FEATURES);
        let node_in_b = p.bias("node_in.b", h, h);
        let edge_in_w = p.weight("edge_in.w", h, cfg.edge_features);
        let edge_in_b = p.bias("edge_in.b", h, h);
        let layers = (0..cfg.layers)
            .map(|i| {
                let n = |k: &str| format!("layer{i}.{k}");
                LayerParams {
                    src_w: p.weight(&n("src_w"), h, h),
                    dst_w: p.weight(&n("dst_w"), h, h),
                    edge_w: p.weight(&n("edge_w"), h, h),
                    edge_b: p.bias(&n("edge_b"), h, h),
                    msg_w: p.weight(&n("msg_w"), h, h),
                    msg_b: p.bias(&n("msg_b"), h, h),
                    node_x: p.weight(&n("node_x"), h, h),
                    node_f: p.weight(&n("node_f"), h, h),
                    node_r: p.weight(&n("node_r"), h, h),
                    node_b: p.bias(&n("node_b"), h, h),
                    out_w: p.weight(&n("out_w"), h, h),
                    out_b: p.bias(&n("out_b"), h, h),
                    ln: p.add(&n("ln"), &[2 * h], Init::LayerNorm),
                    film_w: p.add(&n("film_w"), &[2 * h, c], Init::Zero),
                    film_b: p.add(&n("film_b"), &[2 * h], Init::Zero),
                }
            })
            .collect();
        let mut head = |name: &str| HeadParams {
            w1: p.weight(&format!("{name}.w1"), h, h),
            b1: p.bias(&format!("{name}.b1"), h, h),
            w2: p.add(&format!("{name}.w2"), &[HEAD_OUT, h], Init::Zero),
            b2: p.add(&format!("{name}.b2"), &[HEAD_OUT], Init::Zero),
        };
        let (edge_head, node_head) = (head("edge_head"), head("node_head"));
        EditorParams {
            embed,
            node_in_w,
            node_in_b,
            edge_in_w,
            edge_in_b,
            layers,
            edge_head,
            node_head,
            total: p.total,
            entries: p.entries,
        }
    }
}
