//! The editor's blocks, each forward next to its backward: inputs, one message-passing layer
//! (node projections, edge update, aggregation, node update) and the heads. Backward kernels
//! overwrite parameter gradients; activation gradients say where they add up.

use super::acts::{EdgeSlice, NodeActs, Tape};
use super::params::{HeadParams, LayerParams, Span};
use super::{DeviceGraph, Editor, HEAD_OUT};
use crate::engine::buffer::View;
use crate::engine::device::Device;
use crate::engine::kernels::activation::{activation_backward, activation_forward, Activation};
use crate::engine::kernels::axpy::{axpy, copy};
use crate::engine::kernels::film::{film_backward, film_forward, RowModels};
use crate::engine::kernels::gather::{gather_rows, gather_rows_with, GatherOpts};
use crate::engine::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::engine::kernels::segment::{segment_reduce, SegmentOpts};
use crate::error::Result;
use crate::networks::graph::NODE_FEATURES;
use crate::networks::linear::Linear;

/// The activation of every MLP inside the editor.
const ACT: Activation = Activation::Silu;

/// A linear layer over `rows` rows.
fn lin(rows: usize, fan_in: usize, fan_out: usize) -> Linear {
    Linear::single(rows, fan_in, fan_out)
}

impl Editor {
    /// A parameter tensor, and its gradient.
    fn w(&self, s: Span) -> View<'_> {
        s.of(&self.params)
    }
    fn dw(&self, s: Span) -> View<'_> {
        s.of(&self.grads)
    }

    fn rows<'a>(&self, g: &'a DeviceGraph) -> RowModels<'a> {
        RowModels {
            row_model: g.node_model(),
            row_offsets: g.node_offsets(),
        }
    }

    // ---- Inputs: x0 = embedding of each node's position + linear of its features (bias,
    // flags, signals); e0 = linear of each edge's features (weight, gradient).

    pub(super) fn node_input(&self, dev: &Device, g: &DeviceGraph, x0: View) -> Result<()> {
        let (n, h, p) = (g.n, self.cfg.hidden, &self.layout);
        gather_rows(dev, h, self.w(p.embed), g.pos(), x0)?;
        let l = lin(n, NODE_FEATURES, h);
        l.matmul(dev, g.node_feat(), self.w(p.node_in_w), x0, true)?;
        l.add_bias(dev, x0, self.w(p.node_in_b))
    }

    pub(super) fn edge_input(&self, dev: &Device, feat: View, e0: View) -> Result<()> {
        let p = &self.layout;
        let f = self.cfg.edge_features;
        let l = lin(feat.len / f, f, self.cfg.hidden);
        l.forward(dev, feat, self.w(p.edge_in_w), self.w(p.edge_in_b), e0)
    }

    /// Both inputs' parameter gradients, and the gradients of the graph's inputs (edge and
    /// node features) into the tape.
    pub(super) fn input_backward(&self, dev: &Device, g: &DeviceGraph, t: &Tape) -> Result<()> {
        let (n, e, h, p, at) = (g.n, g.e, self.cfg.hidden, &self.layout, &t.at);
        let (de0, dx0) = (t.g(at.e[0]), t.g(at.x[0]));
        let l = lin(e, self.cfg.edge_features, h);
        l.backward_weight(dev, de0, g.edge_feat(), self.dw(p.edge_in_w))?;
        l.backward_bias(dev, de0, self.dw(p.edge_in_b))?;
        l.backward_input(dev, de0, self.w(p.edge_in_w), t.g(at.edge_feat), false)?;
        let l = lin(n, NODE_FEATURES, h);
        l.backward_weight(dev, dx0, g.node_feat(), self.dw(p.node_in_w))?;
        l.backward_bias(dev, dx0, self.dw(p.node_in_b))?;
        l.backward_input(dev, dx0, self.w(p.node_in_w), t.g(at.node_feat), false)?;
        let by_id = SegmentOpts {
            perm: Some(g.pos_perm()),
            ..Default::default()
        };
        segment_reduce(dev, h, dx0, g.pos_offsets(), self.dw(p.embed), by_id)
    }

    // ---- One layer, for training (one slice: every edge, in the tape) and edits (edges in
    // slices of their own buffers).

    /// Layer `i`: node state `x` and the edges' state -> `x1` and the edges' new state.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_forward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        i: usize,
        x: View,
        a: &NodeActs,
        edges: &[EdgeSlice],
        x1: View,
    ) -> Result<()> {
        let l = &self.layout.layers[i];
        self.projections_forward(dev, g, l, x, a)?;
        for (k, s) in edges.iter().enumerate() {
            self.edge_update_forward(dev, g, l, a, s)?;
            self.aggregate_forward(dev, g, a, s, k > 0)?;
        }
        self.node_update_forward(dev, g, l, x, a, x1)
    }

    /// Layer `i`'s backward from the gradient of its outputs in the tape: writes the gradients
    /// of its inputs (x, e) and of its parameters.
    pub(super) fn layer_backward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        t: &Tape,
        i: usize,
    ) -> Result<()> {
        let (l, at) = (&self.layout.layers[i], &t.at);
        let (a, d) = (at.nodes[i].of(&t.acts), at.nodes[i].of(&t.dacts));
        let (x, dx, dx1) = (t.a(at.x[i]), t.g(at.x[i]), t.g(at.x[i + 1]));
        self.node_update_backward(dev, g, l, x, &a, &d, dx1, dx)?;
        let de1 = t.g(at.e[i + 1]);
        self.aggregate_backward(dev, g, &d, de1)?;
        let s = t.edge_slice(i);
        let ds = EdgeSlice {
            range: s.range.clone(),
            e: t.g(at.e[i]),
            e1: de1,
            z: t.g(at.edges[i].z),
            hz: t.g(at.edges[i].hz),
        };
        self.edge_update_backward(dev, g, l, &s, &ds, &d)?;
        self.projections_backward(dev, g, l, x, &d, dx)
    }

    // ---- Node projections: A x and B x, once per node, for the edge update to gather.

    fn projections_forward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        x: View,
        a: &NodeActs,
    ) -> Result<()> {
        let p = lin(g.n, self.cfg.hidden, self.cfg.hidden);
        p.matmul(dev, x, self.w(l.src_w), a.ax, false)?;
        p.matmul(dev, x, self.w(l.dst_w), a.bx, false)
    }

    /// dA, dB, and dx += the projections' share.
    fn projections_backward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        x: View,
        d: &NodeActs,
        dx: View,
    ) -> Result<()> {
        let p = lin(g.n, self.cfg.hidden, self.cfg.hidden);
        p.backward_weight(dev, d.ax, x, self.dw(l.src_w))?;
        p.backward_weight(dev, d.bx, x, self.dw(l.dst_w))?;
        p.backward_input(dev, d.ax, self.w(l.src_w), dx, true)?;
        p.backward_input(dev, d.bx, self.w(l.dst_w), dx, true)
    }

    // ---- Edge update: z = A x_src + B x_dst + C e + b; e1 = e + W_m silu(z) + b_m.

    fn edge_update_forward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        a: &NodeActs,
        s: &EdgeSlice,
    ) -> Result<()> {
        let (e, h) = (s.range.len(), self.cfg.hidden);
        let (src, dst) = (g.src().sub(s.range.start, e), g.dst().sub(s.range.start, e));
        gather_rows(dev, h, a.ax, src, s.z)?;
        let add = GatherOpts {
            accumulate: true,
            scale: None,
        };
        gather_rows_with(dev, h, a.bx, dst, s.z, add)?;
        let p = lin(e, h, h);
        p.matmul(dev, s.e, self.w(l.edge_w), s.z, true)?;
        p.add_bias(dev, s.z, self.w(l.edge_b))?;
        activation_forward(dev, ACT, s.z, s.hz)?;
        p.forward(dev, s.hz, self.w(l.msg_w), self.w(l.msg_b), s.e1)?;
        axpy(dev, 1.0, s.e, 1.0, s.e1)
    }

    /// From d e1 (`ds.e1`): d e (overwritten), dz, the parameter gradients, and the gradients
    /// of A x and B x (the gathers' adjoints: sums over each node's edges) into `d`.
    fn edge_update_backward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        s: &EdgeSlice,
        ds: &EdgeSlice,
        d: &NodeActs,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let p = lin(s.range.len(), h, h);
        // The residual passes d e1 straight to e.
        copy(dev, ds.e1, ds.e)?;
        p.backward_weight(dev, ds.e1, s.hz, self.dw(l.msg_w))?;
        p.backward_bias(dev, ds.e1, self.dw(l.msg_b))?;
        p.backward_input(dev, ds.e1, self.w(l.msg_w), ds.hz, false)?;
        activation_backward(dev, ACT, s.z, ds.hz, ds.z)?;
        p.backward_bias(dev, ds.z, self.dw(l.edge_b))?;
        p.backward_weight(dev, ds.z, s.e, self.dw(l.edge_w))?;
        p.backward_input(dev, ds.z, self.w(l.edge_w), ds.e, true)?;
        let by_src = SegmentOpts {
            perm: Some(g.src_perm()),
            ..Default::default()
        };
        segment_reduce(dev, h, ds.z, g.src_offsets(), d.ax, by_src)?;
        segment_reduce(dev, h, ds.z, g.dst_offsets(), d.bx, SegmentOpts::default())
    }

    // ---- Aggregation: fwd_i = mean of e1 over the in-edges of i, bwd_i over its out-edges.

    /// The slice's share of the means; a slice after the first adds to the sums before it.
    fn aggregate_forward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        a: &NodeActs,
        s: &EdgeSlice,
        accumulate: bool,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let by_dst = SegmentOpts {
            mean: true,
            accumulate,
            window: Some((s.range.start, s.range.end)),
            perm: None,
        };
        segment_reduce(dev, h, s.e1, g.dst_offsets(), a.fwd, by_dst)?;
        let by_src = SegmentOpts {
            perm: Some(g.src_perm()),
            ..by_dst
        };
        segment_reduce(dev, h, s.e1, g.src_offsets(), a.bwd, by_src)
    }

    /// d e1 += each edge's destination's (source's) gradient / its in- (out-) degree.
    fn aggregate_backward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        d: &NodeActs,
        de1: View,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let by = |scale| GatherOpts {
            accumulate: true,
            scale: Some(scale),
        };
        gather_rows_with(dev, h, d.fwd, g.dst(), de1, by(g.inv_in()))?;
        gather_rows_with(dev, h, d.bwd, g.src(), de1, by(g.inv_out()))
    }

    // ---- Node update: x1 = FiLM(LayerNorm(x + W_o silu(U_x x + U_f fwd + U_b bwd + b) + b_o)).

    fn node_update_forward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        x: View,
        a: &NodeActs,
        x1: View,
    ) -> Result<()> {
        let (n, m, h, c) = (g.n, g.m, self.cfg.hidden, self.cfg.cond_dim);
        let p = lin(n, h, h);
        p.matmul(dev, x, self.w(l.node_x), a.u, false)?;
        p.matmul(dev, a.fwd, self.w(l.node_f), a.u, true)?;
        p.matmul(dev, a.bwd, self.w(l.node_r), a.u, true)?;
        p.add_bias(dev, a.u, self.w(l.node_b))?;
        activation_forward(dev, ACT, a.u, a.hu)?;
        p.forward(dev, a.hu, self.w(l.out_w), self.w(l.out_b), a.xres)?;
        axpy(dev, 1.0, x, 1.0, a.xres)?;
        layernorm_forward(dev, h, a.xres, self.w(l.ln), a.ln_out, a.stats)?;
        let film = lin(m, c, 2 * h);
        film.forward(dev, g.cond(), self.w(l.film_w), self.w(l.film_b), a.gb)?;
        film_forward(dev, h, self.rows(g), a.ln_out, a.gb, x1)
    }

    /// From d x1: dx (overwritten), d fwd and d bwd, and the parameter gradients.
    #[allow(clippy::too_many_arguments)]
    fn node_update_backward(
        &self,
        dev: &Device,
        g: &DeviceGraph,
        l: &LayerParams,
        x: View,
        a: &NodeActs,
        d: &NodeActs,
        dx1: View,
        dx: View,
    ) -> Result<()> {
        let (n, m, h, c) = (g.n, g.m, self.cfg.hidden, self.cfg.cond_dim);
        film_backward(
            dev,
            h,
            self.rows(g),
            a.ln_out,
            a.gb,
            dx1,
            d.ln_out,
            d.gb,
            false,
        )?;
        let film = lin(m, c, 2 * h);
        film.backward_weight(dev, d.gb, g.cond(), self.dw(l.film_w))?;
        film.backward_bias(dev, d.gb, self.dw(l.film_b))?;
        let (ln, dln) = (self.w(l.ln), self.dw(l.ln));
        layernorm_backward(dev, h, a.xres, ln, a.stats, d.ln_out, d.xres, dln, false)?;
        // The residual passes d xres straight to x.
        copy(dev, d.xres, dx)?;
        let p = lin(n, h, h);
        p.backward_weight(dev, d.xres, a.hu, self.dw(l.out_w))?;
        p.backward_bias(dev, d.xres, self.dw(l.out_b))?;
        p.backward_input(dev, d.xres, self.w(l.out_w), d.hu, false)?;
        activation_backward(dev, ACT, a.u, d.hu, d.u)?;
        p.backward_weight(dev, d.u, x, self.dw(l.node_x))?;
        p.backward_weight(dev, d.u, a.fwd, self.dw(l.node_f))?;
        p.backward_weight(dev, d.u, a.bwd, self.dw(l.node_r))?;
        p.backward_bias(dev, d.u, self.dw(l.node_b))?;
        p.backward_input(dev, d.u, self.w(l.node_x), dx, true)?;
        p.backward_input(dev, d.u, self.w(l.node_f), d.fwd, false)?;
        p.backward_input(dev, d.u, self.w(l.node_r), d.bwd, false)
    }

    // ---- A head: out = W2 silu(W1 input + b1) + b2, one row per edge or node of `input`.

    pub(super) fn head_forward(
        &self,
        dev: &Device,
        p: &HeadParams,
        input: View,
        pre: View,
        hid: View,
        out: View,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let rows = input.len / h;
        lin(rows, h, h).forward(dev, input, self.w(p.w1), self.w(p.b1), pre)?;
        activation_forward(dev, ACT, pre, hid)?;
        lin(rows, h, HEAD_OUT).forward(dev, hid, self.w(p.w2), self.w(p.b2), out)
    }

    /// From d out: d input (overwritten) and the head's parameter gradients. `acts` is
    /// (pre, hid) and their gradients.
    pub(super) fn head_backward(
        &self,
        dev: &Device,
        p: &HeadParams,
        input: View,
        (pre, hid, dpre, dhid): (View, View, View, View),
        dout: View,
        dinput: View,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let rows = input.len / h;
        let second = lin(rows, h, HEAD_OUT);
        second.backward_weight(dev, dout, hid, self.dw(p.w2))?;
        second.backward_bias(dev, dout, self.dw(p.b2))?;
        second.backward_input(dev, dout, self.w(p.w2), dhid, false)?;
        activation_backward(dev, ACT, pre, dhid, dpre)?;
        let first = lin(rows, h, h);
        first.backward_weight(dev, dpre, input, self.dw(p.w1))?;
        first.backward_bias(dev, dpre, self.dw(p.b1))?;
        first.backward_input(dev, dpre, self.w(p.w1), dinput, false)
    }
}
