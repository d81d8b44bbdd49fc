//! Edited models on disk: safetensors with PyTorch naming. Reads `nn.Sequential` keys
//! (`0.weight` [out, in], `0.bias`, `2.weight`...) and named modules (`fc1`, `encoder.0`...),
//! ordering layers by name and, where names do not chain, by shapes; F32/F16/BF16/F64 in, F32 out;
//! folds un-finalised torch pruning (`weight_orig` * `weight_mask`). Metadata (strings): `format`,
//! `activation`, `features` (JSON list of input column names), `dataset`.
//! Every problem with a file is an `Error::Input` naming it; nothing here panics on bad bytes.

use crate::engine::kernels::activation::Activation;
use crate::error::{Error, Result};
use crate::networks::mlp::MlpShape;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor read from the file: shape and values converted to f32.
type Tensor = (Vec<usize>, Vec<f32>);

/// One `nn.Linear`: y = x W^T + b.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Module name, the key prefix: "0", "fc1", "net.2".
    pub name: String,
    pub out_dim: usize,
    pub in_dim: usize,
    /// [out, in], row-major.
    pub weight: Vec<f32>,
    /// None for `nn.Linear(bias=False)`; written back the same way.
    pub bias: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub layers: Vec<Linear>,
    pub activation: Activation,
    /// False when the file did not say; ReLU is then assumed (and reported as assumed).
    pub activation_recorded: bool,
    /// Input column names, one per input, when the file records them.
    pub features: Option<Vec<String>>,
    /// All string metadata of the file, as read.
    pub metadata: BTreeMap<String, String>,
    /// Storage dtype of the weights in the file ("F32", "F16", "BF16", "F64").
    pub dtype: String,
}

const PICKLE_HINT: &str = "this is a PyTorch pickle (torch.save), not safetensors; export it with \
    safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")";

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = crate::io::read(path)?;
        Model::from_bytes(path, &bytes)
    }

    /// Parse a safetensors file's bytes; `path` is only used to name it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Model> {
        let bad = |msg: String| Error::input(path, msg);
        let (st, meta) = parse(bytes).map_err(|msg| {
            // A torch.save file is a zip archive (PK..) or a raw pickle (0x80, protocol 2-5).
            // Only judged after safetensors parsing failed: a 128-byte header also starts 0x80.
            let pickled = bytes.starts_with(b"PK\x03\x04")
                || (bytes.len() > 1 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]));
            bad(if pickled { PICKLE_HINT.into() } else { msg })
        })?;
        let metadata: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();

        // Collect tensors by module prefix.
        let mut modules: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
        let mut dtype = None;
        for (name, view) in st.tensors() {
            let (prefix, param) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
            if !matches!(
                param,
                "weight" | "bias" | "weight_orig" | "weight_mask" | "bias_orig" | "bias_mask"
            ) || prefix.is_empty()
            {
                return Err(bad(format!(
                    "unexpected tensor '{name}': regop reads MLPs of Linear layers ('<layer>.weight', '<layer>.bias')"
                )));
            }
            let values = to_f32(&view).map_err(|m| bad(format!("tensor '{name}': {m}")))?;
            if !param.ends_with("_mask") {
                dtype.get_or_insert_with(|| format!("{:?}", view.dtype()));
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "tensor '{name}' holds a non-finite value ({}) at index {i}",
                    values[i]
                )));
            }
            modules
                .entry(prefix.to_string())
                .or_default()
                .insert(param.to_string(), (view.shape().to_vec(), values));
        }
        if modules.is_empty() {
            return Err(bad("holds no tensors".into()));
        }

        let mut layers = Vec::new();
        for (name, mut params) in modules {
            let weight = take_param(&mut params, "weight")
                .map_err(|m| bad(format!("layer '{name}': {m}")))?;
            let bias =
                take_param(&mut params, "bias").map_err(|m| bad(format!("layer '{name}': {m}")))?;
            let Some((wshape, weight)) = weight else {
                return Err(bad(format!("layer '{name}' has a bias but no weight")));
            };
            if wshape.len() != 2 {
                return Err(bad(format!(
                    "layer '{name}': weight has shape {wshape:?}, expected 2-D [out, in]"
                )));
            }
            let (out_dim, in_dim) = (wshape[0], wshape[1]);
            if out_dim == 0 || in_dim == 0 {
                return Err(bad(format!("layer '{name}': zero-width weight {wshape:?}")));
            }
            if let Some((bshape, _)) = &bias {
                if bshape != &[out_dim] {
                    return Err(bad(format!(
                        "layer '{name}': bias has shape {bshape:?}, expected [{out_dim}]"
                    )));
                }
            }
            layers.push(Linear {
                name,
                out_dim,
                in_dim,
                weight,
                bias: bias.map(|b| b.1),
            });
        }
        let layers = order_layers(layers).map_err(bad)?;

        let (activation, activation_recorded) = match metadata.get("activation") {
            Some(s) => (
                Activation::parse(s).ok_or_else(|| bad(format!("unknown activation '{s}' in metadata (regop supports relu, tanh, silu, sigmoid, identity)")))?,
                true,
            ),
            None => (Activation::Relu, false),
        };
        let features = match metadata.get("features") {
            None => None,
            Some(s) => {
                let names: Vec<String> = serde_json::from_str(s).map_err(|e| {
                    bad(format!(
                        "metadata 'features' is not a JSON list of strings: {e}"
                    ))
                })?;
                if names.len() != layers[0].in_dim {
                    return Err(bad(format!(
                        "metadata lists {} features but the first layer has {} inputs",
                        names.len(),
                        layers[0].in_dim
                    )));
                }
                Some(names)
            }
        };
        Ok(Model {
            layers,
            activation,
            activation_recorded,
            features,
            metadata,
            dtype: dtype.unwrap_or_else(|| "F32".into()),
        })
    }

    /// Serialise as F32 safetensors with the same keys it was read with (pruning folded).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta: std::collections::HashMap<String, String> =
            self.metadata.clone().into_iter().collect();
        meta.insert("format".into(), "pt".into());
        meta.insert("activation".into(), self.activation.name().into());
        if let Some(f) = &self.features {
            meta.insert("features".into(), serde_json::to_string(f).unwrap());
        }
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for l in &self.layers {
            data.push((
                format!("{}.weight", l.name),
                vec![l.out_dim, l.in_dim],
                bytemuck::cast_slice(&l.weight).to_vec(),
            ));
            if let Some(b) = &l.bias {
                data.push((
                    format!("{}.bias", l.name),
                    vec![l.out_dim],
                    bytemuck::cast_slice(b).to_vec(),
                ));
            }
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data"),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Usage(format!("serialising model: {e}")))?;
        Ok(canonical_header(&bytes))
    }

    /// Write atomically; refuses to replace an existing file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?, force)
    }

    pub fn shape(&self) -> MlpShape {
        let mut dims = vec![self.layers[0].in_dim];
        dims.extend(self.layers.iter().map(|l| l.out_dim));
        MlpShape::new(&dims, self.activation)
    }

    /// Parameters packed as `BatchedMlp` expects (W then b per layer; a missing bias is zeros).
    pub fn flat_params(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.shape().n_params());
        for l in &self.layers {
            out.extend_from_slice(&l.weight);
            match &l.bias {
                Some(b) => out.extend_from_slice(b),
                None => out.extend(std::iter::repeat_n(0.0, l.out_dim)),
            }
        }
        out
    }

    /// The same model (names, metadata, activation) with new parameters packed as
    /// `flat_params` returns them. A layer stored without a bias keeps none (its file's keys
    /// stay unchanged); the editor's bias edit for it is dropped.
    pub fn with_params(&self, params: &[f32]) -> Model {
        assert_eq!(
            params.len(),
            self.shape().n_params(),
            "with_params: parameter count"
        );
        let mut m = self.clone();
        let mut off = 0;
        for l in &mut m.layers {
            let w = l.weight.len();
            l.weight.copy_from_slice(&params[off..off + w]);
            off += w;
            if let Some(b) = &mut l.bias {
                b.copy_from_slice(&params[off..off + l.out_dim]);
            }
            off += l.out_dim;
        }
        m.dtype = "F32".into();
        m
    }

    pub fn n_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.as_ref().map_or(0, |b| b.len()))
            .sum()
    }

    /// L2 norm of every input column of the first layer: exactly 0 means the model cannot use
    /// that input at all (the evidence a data-minimisation audit needs).
    pub fn input_column_norms(&self) -> Vec<f32> {
        let l = &self.layers[0];
        (0..l.in_dim)
            .map(|i| {
                (0..l.out_dim)
                    .map(|j| l.weight[j * l.in_dim + i].powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect()
    }
}

/// The same file with its header's keys sorted: metadata passes through a HashMap, and the same
/// model must always give the same bytes.
pub(crate) fn canonical_header(bytes: &[u8]) -> Vec<u8> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            other => other,
        }
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header we just wrote");
    let mut text = serde_json::to_string(&sorted(header)).unwrap();
    // Keep the data section 8-byte aligned, as the format recommends.
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Split and validate a safetensors file, checking the header length before the crate does so the
/// message can say what is wrong.
fn parse(
    bytes: &[u8],
) -> std::result::Result<(SafeTensors<'_>, safetensors::tensor::Metadata), String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes: too short for a safetensors header (truncated?)",
            bytes.len()
        ));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if header_len > (bytes.len() - 8) as u64 {
        return Err(format!(
            "header length {header_len} exceeds the file size {} (truncated or not safetensors)",
            bytes.len()
        ));
    }
    let st = SafeTensors::deserialize(bytes).map_err(describe)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(describe)?;
    Ok((st, meta))
}

/// Take `name`, folding `name_orig * name_mask` when the module was pruned and not finalised.
fn take_param(
    params: &mut BTreeMap<String, Tensor>,
    name: &str,
) -> std::result::Result<Option<Tensor>, String> {
    let plain = params.remove(name);
    let orig = params.remove(&format!("{name}_orig"));
    let mask = params.remove(&format!("{name}_mask"));
    match (plain, orig, mask) {
        (Some(p), None, None) => Ok(Some(p)),
        (None, None, None) => Ok(None),
        (None, Some((shape, w)), Some((mshape, m))) => {
            if shape != mshape {
                return Err(format!(
                    "{name}_mask has shape {mshape:?} but {name}_orig has {shape:?}"
                ));
            }
            let folded: Vec<f32> = w.iter().zip(&m).map(|(a, b)| a * b).collect();
            // Finite factors can still overflow: 1e30 * 1e30 is inf.
            if let Some(i) = folded.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "{name}_orig * {name}_mask is not finite ({}) at index {i}",
                    folded[i]
                ));
            }
            Ok(Some((shape, folded)))
        }
        (Some(_), _, _) => Err(format!("has both '{name}' and '{name}_orig'/'{name}_mask'")),
        (None, Some(_), None) => Err(format!("has '{name}_orig' without '{name}_mask'")),
        (None, None, Some(_)) => Err(format!("has '{name}_mask' without '{name}_orig'")),
    }
}

/// Natural-order key: "net.10" sorts after "net.2".
fn natural_key(s: &str) -> Vec<(String, u64)> {
    s.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (String::new(), n),
            Err(_) => (part.to_string(), 0),
        })
        .collect()
}

fn chains(layers: &[Linear]) -> bool {
    layers.windows(2).all(|w| w[0].out_dim == w[1].in_dim)
}

/// Order layers into a chain: by name when names sort into one, else by shapes when the shapes
/// admit exactly one chain.
fn order_layers(mut layers: Vec<Linear>) -> std::result::Result<Vec<Linear>, String> {
    layers.sort_by_key(|l| natural_key(&l.name));
    if chains(&layers) {
        return Ok(layers);
    }
    let describe = |ls: &[Linear]| {
        ls.iter()
            .map(|l| format!("{} [{}, {}]", l.name, l.out_dim, l.in_dim))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let starts: Vec<usize> = (0..layers.len())
        .filter(|&i| {
            !layers
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.out_dim == layers[i].in_dim)
        })
        .collect();
    if starts.len() != 1 {
        return Err(format!(
            "layers do not chain into an MLP: {}",
            describe(&layers)
        ));
    }
    let mut rest = layers.clone();
    let mut chain = vec![rest.remove(starts[0])];
    while !rest.is_empty() {
        let want = chain.last().unwrap().out_dim;
        let next: Vec<usize> = (0..rest.len())
            .filter(|&i| rest[i].in_dim == want)
            .collect();
        match next.len() {
            1 => chain.push(rest.remove(next[0])),
            0 => return Err(format!("layers do not chain into an MLP: {}", describe(&layers))),
            _ => return Err(format!("cannot infer the layer order from names or shapes ({}); name layers so they sort in order", describe(&layers))),
        }
    }
    Ok(chain)
}

fn to_f32(view: &TensorView) -> std::result::Result<Vec<f32>, String> {
    let d = view.data();
    let out = match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (regop reads F32, F16, BF16, F64)"
            ))
        }
    };
    Ok(out)
}

fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader(_) => "header is not valid UTF-8".into(),
        SafeTensorError::InvalidHeaderStart => {
            "header does not start with '{' (not a safetensors file?)".into()
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("invalid header JSON: {e}"),
        SafeTensorError::HeaderTooLarge => "header larger than 100 MB".into(),
        SafeTensorError::HeaderTooSmall => "header too small".into(),
        SafeTensorError::InvalidHeaderLength => "invalid header length (truncated file?)".into(),
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor '{name}' has data offsets out of range or overlapping another tensor")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's shape and dtype do not match its byte range".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "data section does not match the tensor offsets (truncated or padded file)".into()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's declared shape is impossibly large".into()
        }
        SafeTensorError::InvalidTensorView(dtype, shape, n) => {
            format!("tensor of {dtype:?} {shape:?} does not fit its {n} bytes")
        }
        other => format!("not a valid safetensors file: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lin(name: &str, out_dim: usize, in_dim: usize) -> Linear {
        Linear {
            name: name.into(),
            out_dim,
            in_dim,
            weight: vec![0.5; out_dim * in_dim],
            bias: None,
        }
    }

    #[test]
    fn numeric_names_sort_naturally() {
        let layers = vec![lin("net.10", 1, 4), lin("net.2", 4, 4), lin("net.0", 4, 3)];
        let names: Vec<_> = order_layers(layers)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["net.0", "net.2", "net.10"]);
    }

    #[test]
    fn ambiguous_shapes_are_refused_not_guessed() {
        // Names out of order and two interchangeable 4x4 layers: no unique chain.
        let layers = vec![
            lin("z", 1, 4),
            lin("b", 4, 4),
            lin("a", 4, 4),
            lin("c", 4, 3),
        ];
        let err = order_layers(layers).unwrap_err();
        assert!(
            err.contains("cannot infer") || err.contains("do not chain"),
            "{err}"
        );
    }
}
