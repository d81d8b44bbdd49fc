//! The linear layer both networks are built of: y = x W^T + b, in PyTorch's layout (W is
//! [out, in]), for `batch` independent problems at once, each operand's items `*_stride` values
//! apart. The MLPs use it for B models of one shape; the editor for one problem (batch 1).
//! Forward and the three products of its backward side by side.

use crate::engine::buffer::View;
use crate::engine::device::Device;
use crate::engine::kernels::bias::{bias_add, BiasAdd};
use crate::engine::kernels::gemm::{gemm, Gemm};
use crate::engine::kernels::reduce::{reduce, Axis, Reduce};
use crate::error::Result;

#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub batch: usize,
    /// Rows of x and y per problem.
    pub rows: usize,
    pub fan_in: usize,
    pub fan_out: usize,
    /// Distance between problems: of x (0 = one input shared by all), of W and b (the
    /// stride of one model's parameters), of y.
    pub x_stride: usize,
    pub w_stride: usize,
    pub y_stride: usize,
}

impl Linear {
    /// One problem: x [rows, fan_in] -> y [rows, fan_out].
    pub fn single(rows: usize, fan_in: usize, fan_out: usize) -> Linear {
        Linear {
            batch: 1,
            rows,
            fan_in,
            fan_out,
            x_stride: 0,
            w_stride: 0,
            y_stride: 0,
        }
    }

    /// y (+)= x W^T.
    pub fn matmul(&self, dev: &Device, x: View, w: View, y: View, accumulate: bool) -> Result<()> {
        let g = Gemm {
            batch: self.batch,
            m: self.rows,
            n: self.fan_out,
            k: self.fan_in,
            trans_a: false,
            trans_b: true,
            a_stride: self.x_stride,
            b_stride: self.w_stride,
            c_stride: self.y_stride,
            accumulate,
        };
        gemm(dev, &g, x, w, y)
    }

    /// y += b, on every row.
    pub fn add_bias(&self, dev: &Device, y: View, b: View) -> Result<()> {
        let shape = BiasAdd {
            batch: self.batch,
            rows: self.rows,
            cols: self.fan_out,
            y_stride: self.y_stride,
            b_stride: self.w_stride,
        };
        bias_add(dev, &shape, y, b)
    }

    /// y = x W^T + b.
    pub fn forward(&self, dev: &Device, x: View, w: View, b: View, y: View) -> Result<()> {
        self.matmul(dev, x, w, y, false)?;
        self.add_bias(dev, y, b)
    }

    /// dW = dy^T x (overwritten).
    pub fn backward_weight(&self, dev: &Device, dy: View, x: View, dw: View) -> Result<()> {
        let g = Gemm {
            batch: self.batch,
            m: self.fan_out,
            n: self.fan_in,
            k: self.rows,
            trans_a: true,
            trans_b: false,
            a_stride: self.y_stride,
            b_stride: self.x_stride,
            c_stride: self.w_stride,
            accumulate: false,
        };
        gemm(dev, &g, dy, x, dw)
    }

    /// db = the column sums of dy (overwritten).
    pub fn backward_bias(&self, dev: &Device, dy: View, db: View) -> Result<()> {
        let r = Reduce {
            x_stride: self.y_stride,
            out_stride: self.w_stride,
            ..Reduce::new(Axis::Cols, self.batch, self.rows, self.fan_out)
        };
        reduce(dev, &r, dy, db)
    }

    /// dx (+)= dy W.
    pub fn backward_input(
        &self,
        dev: &Device,
        dy: View,
        w: View,
        dx: View,
        accumulate: bool,
    ) -> Result<()> {
        let g = Gemm {
            batch: self.batch,
            m: self.rows,
            n: self.fan_in,
            k: self.fan_out,
            trans_a: false,
            trans_b: false,
            a_stride: self.y_stride,
            b_stride: self.w_stride,
            c_stride: self.x_stride,
            accumulate,
        };
        gemm(dev, &g, dy, w, dx)
    }
}
