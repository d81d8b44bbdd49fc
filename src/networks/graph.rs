//! The parameter graph of a batch of MLPs: neurons are nodes, weights are edges. Models of any
//! depth and width are packed back to back. Within a model, nodes are the input columns, then
//! each layer's neurons; edges are each layer's `W[out, in]` in PyTorch row-major order, so edges
//! are sorted by destination (CSR by destination is implicit) and the source order is a
//! permutation. Graph -> weights is the exact inverse of weights -> graph.

use crate::networks::mlp::MlpShape;

/// What the editor is asked to do to one model: its weights, per-input requirement flags, and
/// the conditioning vector (requirement kind, log lambda, targets).
#[derive(Clone, Debug)]
pub struct ModelInput<'a> {
    pub shape: &'a MlpShape,
    /// Parameters packed as `MlpShape` lays them out (W then b per layer).
    pub params: &'a [f32],
    /// Per input column: the requirement removes it.
    pub removed: &'a [bool],
    /// Per input column: it belongs to the sensitive attribute.
    pub sensitive: &'a [bool],
    pub cond: &'a [f32],
    /// What the edit's data says of the model, for editors that read data (zeros without).
    pub signals: Option<&'a Signals>,
    /// Editors that may bring back weights a rule pruned (`EditSpec::moves_rule_mask`): per
    /// parameter, the value a pruned weight returns with (0 where the rule kept it), read as a
    /// third edge feature.
    pub returns: Option<&'a [f32]>,
}

/// What a calibration batch says of one model where an edit starts: the gradient of the edit's
/// loss with respect to every parameter (in the model's parameter layout, scaled to unit RMS),
/// that scale's log10, and each node's activation mean and standard deviation ([nodes, 2]:
/// input columns, then each layer's neurons).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    pub grad: Vec<f32>,
    pub log_scale: f32,
    pub activations: Vec<f32>,
}

/// Size of the positional-id table: a distinct id per input column and per output neuron, one id
/// per hidden-layer index (hidden neurons of a layer share it, keeping permutation symmetry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PosIds {
    pub max_inputs: usize,
    pub max_hidden_layers: usize,
    pub max_outputs: usize,
}

impl PosIds {
    pub fn count(&self) -> usize {
        self.max_inputs + self.max_hidden_layers + self.max_outputs
    }
}

/// Node input features per node: bias value (0 on inputs), removed flag, sensitive flag, then
/// the signals: the bias's gradient, activation mean and standard deviation, the model's
/// gradient scale (log10).
pub const NODE_FEATURES: usize = 7;
/// Edge input features per edge: the weight, and its gradient (a signal); editors that may
/// bring back pruned weights read a third, the value a pruned weight returns with
/// (`ModelInput::returns`).
pub const EDGE_FEATURES: usize = 2;
pub const EDGE_FEATURES_WITH_RETURNS: usize = 3;

/// See `GraphBatch::param_map`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamMap {
    pub map: Vec<u32>,
    pub kind: Vec<u32>,
    pub inv: Vec<u32>,
    /// Where each model's parameters start in the packed vector (and the total at the end).
    pub model_offsets: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GraphBatch {
    pub shapes: Vec<MlpShape>,
    pub node_offsets: Vec<u32>,
    pub edge_offsets: Vec<u32>,
    pub node_model: Vec<u32>,
    pub node_feat: Vec<f32>,
    pub node_pos: Vec<u32>,
    pub edge_weight: Vec<f32>,
    /// Edge input features [E, edge_features].
    pub edge_feat: Vec<f32>,
    /// `EDGE_FEATURES`, or `EDGE_FEATURES_WITH_RETURNS` where the models carry `returns`.
    pub edge_features: usize,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    /// CSR by destination: in-edges of node n are dst_offsets[n]..dst_offsets[n+1].
    pub dst_offsets: Vec<u32>,
    /// Edges sorted by source, and the CSR over that order.
    pub src_perm: Vec<u32>,
    pub src_offsets: Vec<u32>,
    /// Nodes sorted by positional id, and the CSR over ids (for the embedding gradient).
    pub pos_perm: Vec<u32>,
    pub pos_offsets: Vec<u32>,
    /// 1 / in-degree and 1 / out-degree per node (0 where the degree is 0).
    pub inv_in_deg: Vec<f32>,
    pub inv_out_deg: Vec<f32>,
    pub cond: Vec<f32>,
    pub cond_dim: usize,
}

impl GraphBatch {
    pub fn models(&self) -> usize {
        self.shapes.len()
    }
    pub fn nodes(&self) -> usize {
        self.node_model.len()
    }
    pub fn edges(&self) -> usize {
        self.src.len()
    }

    /// Pack `inputs` into one graph. Errors name the model when it does not fit the id table.
    pub fn build(inputs: &[ModelInput], pos: &PosIds) -> Result<GraphBatch, String> {
        let cond_dim = inputs.first().map_or(0, |i| i.cond.len());
        let returns = inputs.first().is_some_and(|i| i.returns.is_some());
        assert!(
            inputs.iter().all(|i| i.returns.is_some() == returns),
            "returns: every model or none"
        );
        let mut g = GraphBatch {
            shapes: vec![],
            node_offsets: vec![0],
            edge_offsets: vec![0],
            node_model: vec![],
            node_feat: vec![],
            node_pos: vec![],
            edge_weight: vec![],
            edge_feat: vec![],
            edge_features: if returns {
                EDGE_FEATURES_WITH_RETURNS
            } else {
                EDGE_FEATURES
            },
            src: vec![],
            dst: vec![],
            dst_offsets: vec![0],
            src_perm: vec![],
            src_offsets: vec![],
            pos_perm: vec![],
            pos_offsets: vec![],
            inv_in_deg: vec![],
            inv_out_deg: vec![],
            cond: vec![],
            cond_dim,
        };
        for (m, inp) in inputs.iter().enumerate() {
            g.push_model(m, inp, pos)?;
        }
        g.index(pos);
        Ok(g)
    }

    /// Append model `m`'s nodes (input columns, then each layer's neurons) and edges (each
    /// layer's W[out, in], row-major: node i of layer l -> node j of layer l + 1).
    fn push_model(&mut self, m: usize, inp: &ModelInput, pos: &PosIds) -> Result<(), String> {
        let s = inp.shape;
        let (n_in, n_out, hidden) = (s.dims[0], s.outputs(), s.layers() - 1);
        if n_in > pos.max_inputs || n_out > pos.max_outputs || hidden > pos.max_hidden_layers {
            return Err(format!(
                "model {m} ({:?}) exceeds the editor's limits: {} inputs, {} hidden layers, {} outputs",
                s.dims, pos.max_inputs, pos.max_hidden_layers, pos.max_outputs
            ));
        }
        assert_eq!(inp.params.len(), s.n_params(), "model {m}: parameter count");
        assert!(
            inp.removed.len() == n_in
                && inp.sensitive.len() == n_in
                && inp.cond.len() == self.cond_dim,
            "model {m}: flags"
        );
        let base = self.node_model.len() as u32;
        let sig = inp.signals;
        // A node's signals: (bias gradient, activation mean and std, gradient scale).
        let node_signal = |node: usize, grad: Option<usize>| -> [f32; 4] {
            match sig {
                Some(s) => [
                    grad.map_or(0.0, |p| s.grad[p]),
                    s.activations[2 * node],
                    s.activations[2 * node + 1],
                    s.log_scale,
                ],
                None => [0.0; 4],
            }
        };
        // Nodes: inputs, then each layer's neurons.
        let mut layer_start = vec![base];
        for i in 0..n_in {
            self.node_model.push(m as u32);
            self.node_feat.extend([
                0.0,
                inp.removed[i] as u32 as f32,
                inp.sensitive[i] as u32 as f32,
            ]);
            self.node_feat.extend(node_signal(i, None));
            self.node_pos.push(i as u32);
        }
        let mut node = n_in;
        for l in 0..s.layers() {
            layer_start.push(self.node_model.len() as u32);
            let b = &inp.params[s.bias_offset(l)..][..s.fan_out(l)];
            for (j, &bj) in b.iter().enumerate() {
                self.node_model.push(m as u32);
                self.node_feat.extend([bj, 0.0, 0.0]);
                self.node_feat
                    .extend(node_signal(node, Some(s.bias_offset(l) + j)));
                node += 1;
                let id = if l + 1 == s.layers() {
                    pos.max_inputs + pos.max_hidden_layers + j
                } else {
                    pos.max_inputs + l
                };
                self.node_pos.push(id as u32);
            }
        }
        // Edges: W[l][j, i], row-major: node i of layer l -> node j of layer l + 1.
        for l in 0..s.layers() {
            let (fi, fo) = (s.fan_in(l), s.fan_out(l));
            let w = &inp.params[s.weight_offset(l)..][..fi * fo];
            for j in 0..fo {
                for i in 0..fi {
                    self.src.push(layer_start[l] + i as u32);
                    self.dst.push(layer_start[l + 1] + j as u32);
                    let p = s.weight_offset(l) + j * fi + i;
                    self.edge_weight.push(w[j * fi + i]);
                    self.edge_feat
                        .extend([w[j * fi + i], sig.map_or(0.0, |s| s.grad[p])]);
                    if let Some(r) = inp.returns {
                        self.edge_feat.push(r[p]);
                    }
                }
            }
        }
        self.cond.extend_from_slice(inp.cond);
        self.shapes.push(s.clone());
        self.node_offsets.push(self.node_model.len() as u32);
        self.edge_offsets.push(self.src.len() as u32);
        Ok(())
    }

    /// The orders the kernels reduce over: CSR by destination (the edges are sorted so), by
    /// source through a permutation, nodes by positional id; and 1 / degree per node.
    fn index(&mut self, pos: &PosIds) {
        let (n, e) = (self.nodes(), self.edges());
        // CSR by destination (edges already sorted by destination).
        let mut in_deg = vec![0u32; n];
        let mut out_deg = vec![0u32; n];
        for k in 0..e {
            in_deg[self.dst[k] as usize] += 1;
            out_deg[self.src[k] as usize] += 1;
        }
        debug_assert!(self.dst.windows(2).all(|w| w[0] <= w[1]));
        for d in &in_deg {
            self.dst_offsets.push(self.dst_offsets.last().unwrap() + d);
        }
        // By source: a stable counting sort keeps each node's out-edges in edge order.
        self.src_offsets = vec![0; n + 1];
        for (i, d) in out_deg.iter().enumerate() {
            self.src_offsets[i + 1] = self.src_offsets[i] + d;
        }
        let mut next = self.src_offsets.clone();
        self.src_perm = vec![0; e];
        for k in 0..e {
            let s = self.src[k] as usize;
            self.src_perm[next[s] as usize] = k as u32;
            next[s] += 1;
        }
        // By positional id.
        let ids = pos.count();
        let mut count = vec![0u32; ids];
        for &p in &self.node_pos {
            count[p as usize] += 1;
        }
        self.pos_offsets = vec![0; ids + 1];
        for (i, c) in count.iter().enumerate() {
            self.pos_offsets[i + 1] = self.pos_offsets[i] + c;
        }
        let mut next = self.pos_offsets.clone();
        self.pos_perm = vec![0; n];
        for (node, &p) in self.node_pos.iter().enumerate() {
            self.pos_perm[next[p as usize] as usize] = node as u32;
            next[p as usize] += 1;
        }
        self.inv_in_deg = in_deg
            .iter()
            .map(|&d| if d > 0 { 1.0 / d as f32 } else { 0.0 })
            .collect();
        self.inv_out_deg = out_deg
            .iter()
            .map(|&d| if d > 0 { 1.0 / d as f32 } else { 0.0 })
            .collect();
    }

    /// Parameters of every model from per-edge weight values and per-node bias values (the
    /// inverse of `build`): model m's W from its edges in order, b from its non-input nodes.
    pub fn unpack(&self, edge_values: &[f32], node_bias: &[f32]) -> Vec<Vec<f32>> {
        (0..self.models())
            .map(|m| {
                let s = &self.shapes[m];
                let (mut e, mut n) = (
                    self.edge_offsets[m] as usize,
                    self.node_offsets[m] as usize + s.dims[0],
                );
                let mut out = Vec::with_capacity(s.n_params());
                for l in 0..s.layers() {
                    let w = s.fan_in(l) * s.fan_out(l);
                    out.extend_from_slice(&edge_values[e..e + w]);
                    out.extend_from_slice(&node_bias[n..n + s.fan_out(l)]);
                    e += w;
                    n += s.fan_out(l);
                }
                out
            })
            .collect()
    }

    /// How every parameter of every model (packed back to back, as `unpack` returns them) maps
    /// to a head row of the editor (edges first, then nodes): `map[p]` is p's row, `inv[row]` is
    /// the parameter the row produces or `edit::NONE`, and `kind[p]` = model << 2 | kind, with
    /// `REMOVED` for weights out of a removed input column (see `kernels::apply_edit`).
    pub fn param_map(&self) -> ParamMap {
        use crate::engine::kernels::apply_edit::{BIAS, NONE, REMOVED, WEIGHT};
        let (e_total, n_total) = (self.edges(), self.nodes());
        let mut pm = ParamMap {
            map: vec![],
            kind: vec![],
            inv: vec![NONE; e_total + n_total],
            model_offsets: vec![0],
        };
        for m in 0..self.models() {
            let s = &self.shapes[m];
            let (mut e, mut n) = (
                self.edge_offsets[m] as usize,
                self.node_offsets[m] as usize + s.dims[0],
            );
            let first = self.node_offsets[m] as usize;
            let tag = (m as u32) << 2;
            for l in 0..s.layers() {
                let (fi, fo) = (s.fan_in(l), s.fan_out(l));
                for k in 0..fi * fo {
                    let removed =
                        l == 0 && self.node_feat[(first + k % fi) * NODE_FEATURES + 1] != 0.0;
                    pm.inv[e + k] = pm.map.len() as u32;
                    pm.map.push((e + k) as u32);
                    pm.kind.push(tag | if removed { REMOVED } else { WEIGHT });
                }
                for j in 0..fo {
                    pm.inv[e_total + n + j] = pm.map.len() as u32;
                    pm.map.push((e_total + n + j) as u32);
                    pm.kind.push(tag | BIAS);
                }
                e += fi * fo;
                n += fo;
            }
            pm.model_offsets.push(pm.map.len());
        }
        pm
    }

    /// Node bias values (column 0 of the node features).
    pub fn node_bias(&self) -> Vec<f32> {
        self.node_feat.chunks(NODE_FEATURES).map(|f| f[0]).collect()
    }
}
