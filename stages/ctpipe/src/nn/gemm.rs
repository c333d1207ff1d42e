//! The one matrix product the CPU kernels of `conv.rs` and `linear.rs` call: gemm's, on
//! matrices given by slice and strides, writing into memory that may be uninitialised (gemm
//! overwrites every element, so the destination need not be zeroed first).

use candle_core::WithDType;
use gemm::Parallelism;
use std::mem::MaybeUninit;

/// A matrix inside a slice: element (r, c) at `r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    pub(super) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Mat<'a, T> {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    pub(super) fn t(self) -> Mat<'a, T> {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b`, dst row-major (a.rows × b.cols). gemm writes every element of dst without
/// reading it, so dst may be uninitialised; the same memory, initialised, is returned.
pub(super) fn matmul_into<'d, T: WithDType>(dst: &'d mut [MaybeUninit<T>], a: Mat<T>, b: Mat<T>, par: Parallelism) -> &'d mut [T] {
    assert!(a.cols == b.rows && dst.len() == a.rows * b.cols && a.in_bounds() && b.in_bounds(), "matmul_into: matrix shapes do not fit");
    // SAFETY: the assertion keeps every index gemm forms inside its slice; dst is exclusive, and
    // with read_dst false gemm only writes it (`dst := a·b`, every element).
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr() as *mut T,
            1,
            b.cols as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        );
        &mut *(dst as *mut [MaybeUninit<T>] as *mut [T])
    }
}

/// An initialised slice seen as possibly uninitialised, to be overwritten by [`matmul_into`]
/// (sound: nothing uninitialised is ever written into it).
pub(super) fn as_uninit<T>(v: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's layout, and the only writes through it are values of T.
    unsafe { &mut *(v as *mut [T] as *mut [MaybeUninit<T>]) }
}
