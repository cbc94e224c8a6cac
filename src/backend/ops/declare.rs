//! What the op list generates in `ops`: the family traits, the [`Backend`](super::Backend) trait,
//! its blanket impl over every type that implements [`Device`](super::Device) and all families,
//! and [`FAMILIES`](super::FAMILIES); and the consumers of [`op_list!`](crate::op_list) that the
//! backends use (`family_modules`, `impl_params_repr`, `impl_families_by_functions`).

/// One method of a family trait: a required method, or one whose default is its reference.
macro_rules! family_method {
    ($(#[$attr:meta])* $op:ident ($($arg:ident : $ty:ty),*) []) => {
        $(#[$attr])*
        fn $op(&self, $($arg: $ty),*) -> $crate::error::Result<()>;
    };
    ($(#[$attr:meta])* $op:ident ($($arg:ident : $ty:ty),*) [$reference:path]) => {
        $(#[$attr])*
        fn $op(&self, $($arg: $ty),*) -> $crate::error::Result<()> {
            $reference(self, $($arg),*)
        }
    };
}

pub(crate) use family_method;

/// The `Option<&str>` of an optional path.
macro_rules! name_of {
    () => {
        None
    };
    ($reference:path) => {
        Some(stringify!($reference))
    };
}
pub(crate) use name_of;

/// Whether an op has compute-typed buffers: not when it is declared `in f32`.
macro_rules! is_compute {
    () => {
        true
    };
    (f32) => {
        false
    };
}
pub(crate) use is_compute;

macro_rules! declare_ops {
    ([] $(
        $(#[$family_attr:meta])*
        $family:ident : $Trait:ident [$($params:ident),*] {
            $(
                $(#[$attr:meta])*
                fn $op:ident(&self, $($arg:ident : $ty:ty),* $(,)?) -> Result<()> $(in $f32:ident)? $(= $reference:path)?;
            )*
        }
    )*) => {
        /// One trait per op family, implemented by each backend in its `<family>.rs`; the
        /// [`Backend`] trait forwards each op to its family's trait.
        pub mod family {
            use super::*;
            $(
                $(#[$family_attr])*
                pub trait $Trait: Backend {
                    $(
                        $crate::backend::ops::declare::family_method!($(#[$attr])* $op ($($arg: $ty),*) [$($reference)?]);
                    )*
                }
            )*
        }

        /// A compute backend: device-resident buffers and every op of the engine. It is implemented
        /// for every type that implements [`Buffers`], [`Device`] and the trait of every op family
        /// (see [`family`]): a backend's `mod.rs` holds its device and memory, and each of its
        /// `<family>.rs` files the ops of that family.
        ///
        /// Buffer types (`--precision`, see storage.rs): in each op the buffers below marked f32 are f32
        /// in every mode, and all its other buffers are compute-typed and share one type `T` (f32 or
        /// bf16), which picks the kernel; values are read as f32, computed in f32 and rounded to `T` when
        /// written. Exceptions: `copy` converts between any two types, `fill`, `scale_inplace`, `rope_*`
        /// take a buffer of either type, `matmul` may write an f32 `out` from `T` operands, and
        /// `sum_squares` and `adamw` read a `grad`/`x` of either type.
        ///
        /// | op | f32 in every mode |
        /// |----|-------------------|
        /// | `layernorm_*`, `rmsnorm_*` | `mean`, `rstd` |
        /// | `attention_fwd`, `attention_bwd`, `attention_decode_fwd` | `lse` |
        /// | `cross_entropy_*` | `losses`, `dlosses`, `lse` |
        /// | `logprob_gather_*` | `logp`, `entropy`, `lse`, `dlogp`, `dentropy` |
        /// | `sum_squares` | `acc` |
        /// | `adamw` | `param` (the master weights), `m`, `v`, `norm_sq` |
        /// | the ops declared `in f32` in the op list (`kl_penalty_*`, `ppo_loss_fwd_bwd`, `gae`, `masked_whiten`, `group_advantages`, `normalize_rewards`, `ranking_loss`, `preference_loss_fwd_bwd`; `decode_advance` has ids only) | every buffer |
        pub trait Backend: Send + Sync {
            type Buf: Send + Sync;
            type Ids: Send + Sync;

            /// See [`Device::name`].
            fn name(&self) -> &'static str;
            /// See [`Device::device_description`].
            fn device_description(&self) -> String;
            /// See [`Device::matmul_precision`].
            fn matmul_precision(&self) -> MatmulPrecision;
            /// See [`Device::set_matmul_precision`].
            fn set_matmul_precision(&mut self, p: MatmulPrecision) -> $crate::error::Result<()>;
            /// See [`Device::compute_dtype`].
            fn compute_dtype(&self) -> Dtype;
            /// See [`Device::preferred_compute_dtype`].
            fn preferred_compute_dtype(&self) -> Dtype;
            /// See [`Device::set_compute_dtype`].
            fn set_compute_dtype(&mut self, d: Dtype) -> $crate::error::Result<()>;
            /// See [`Device::alloc_as`].
            fn alloc_as(&self, len: usize, s: Storage) -> $crate::error::Result<Self::Buf>;
            /// See [`Device::dtype`].
            fn dtype(&self, buf: &Self::Buf) -> Dtype;
            /// See [`Device::alloc`].
            fn alloc(&self, len: usize) -> $crate::error::Result<Self::Buf>;
            /// See [`Device::upload`].
            fn upload(&self, data: &[f32]) -> $crate::error::Result<Self::Buf>;
            /// See [`Device::write`].
            fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> $crate::error::Result<()>;
            /// See [`Device::download`].
            fn download(&self, buf: &Self::Buf) -> $crate::error::Result<Vec<f32>>;
            /// See [`Device::download_range`].
            fn download_range(&self, buf: &Self::Buf, start: usize, len: usize) -> $crate::error::Result<Vec<f32>>;
            /// See [`Device::len`].
            fn len(&self, buf: &Self::Buf) -> usize;
            /// See [`Device::alloc_ids`].
            fn alloc_ids(&self, len: usize) -> $crate::error::Result<Self::Ids>;
            /// See [`Device::upload_ids`].
            fn upload_ids(&self, data: &[i32]) -> $crate::error::Result<Self::Ids>;
            /// See [`Device::write_ids`].
            fn write_ids(&self, buf: &mut Self::Ids, data: &[i32]) -> $crate::error::Result<()>;
            /// See [`Device::download_ids`].
            fn download_ids(&self, buf: &Self::Ids) -> $crate::error::Result<Vec<i32>>;
            /// See [`Device::synchronize`].
            fn synchronize(&self) -> $crate::error::Result<()>;
            /// See [`Device::replay`].
            fn replay(&self, key: u64, f: &mut dyn FnMut() -> $crate::error::Result<()>) -> $crate::error::Result<bool>;
            /// See [`Device::concurrently`].
            fn concurrently(&self, tasks: &mut [&mut dyn FnMut() -> $crate::error::Result<()>]) -> $crate::error::Result<()>;
            /// See [`Device::buffer_key`].
            fn buffer_key(&self, buf: &Self::Buf) -> u64;
            $($(
                $(#[$attr])*
                fn $op(&self, $($arg: $ty),*) -> $crate::error::Result<()>;
            )*)*
        }

        impl<T> Backend for T
        where
            T: Buffers + Device + $(family::$Trait +)* Send + Sync,
        {
            type Buf = <T as Buffers>::Buf;
            type Ids = <T as Buffers>::Ids;

            fn name(&self) -> &'static str {
                <T as Device>::name(self)
            }
            fn device_description(&self) -> String {
                <T as Device>::device_description(self)
            }
            fn matmul_precision(&self) -> MatmulPrecision {
                <T as Device>::matmul_precision(self)
            }
            fn set_matmul_precision(&mut self, p: MatmulPrecision) -> $crate::error::Result<()> {
                <T as Device>::set_matmul_precision(self, p)
            }
            fn compute_dtype(&self) -> Dtype {
                <T as Device>::compute_dtype(self)
            }
            fn preferred_compute_dtype(&self) -> Dtype {
                <T as Device>::preferred_compute_dtype(self)
            }
            fn set_compute_dtype(&mut self, d: Dtype) -> $crate::error::Result<()> {
                <T as Device>::set_compute_dtype(self, d)
            }
            fn alloc_as(&self, len: usize, s: Storage) -> $crate::error::Result<Self::Buf> {
                <T as Device>::alloc_as(self, len, s)
            }
            fn dtype(&self, buf: &Self::Buf) -> Dtype {
                <T as Device>::dtype(self, buf)
            }
            fn alloc(&self, len: usize) -> $crate::error::Result<Self::Buf> {
                <T as Device>::alloc(self, len)
            }
            fn upload(&self, data: &[f32]) -> $crate::error::Result<Self::Buf> {
                <T as Device>::upload(self, data)
            }
            fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> $crate::error::Result<()> {
                <T as Device>::write(self, buf, data)
            }
            fn download(&self, buf: &Self::Buf) -> $crate::error::Result<Vec<f32>> {
                <T as Device>::download(self, buf)
            }
            fn download_range(&self, buf: &Self::Buf, start: usize, len: usize) -> $crate::error::Result<Vec<f32>> {
                <T as Device>::download_range(self, buf, start, len)
            }
            fn len(&self, buf: &Self::Buf) -> usize {
                <T as Device>::len(self, buf)
            }
            fn alloc_ids(&self, len: usize) -> $crate::error::Result<Self::Ids> {
                <T as Device>::alloc_ids(self, len)
            }
            fn upload_ids(&self, data: &[i32]) -> $crate::error::Result<Self::Ids> {
                <T as Device>::upload_ids(self, data)
            }
            fn write_ids(&self, buf: &mut Self::Ids, data: &[i32]) -> $crate::error::Result<()> {
                <T as Device>::write_ids(self, buf, data)
            }
            fn download_ids(&self, buf: &Self::Ids) -> $crate::error::Result<Vec<i32>> {
                <T as Device>::download_ids(self, buf)
            }
            fn synchronize(&self) -> $crate::error::Result<()> {
                <T as Device>::synchronize(self)
            }
            fn replay(&self, key: u64, f: &mut dyn FnMut() -> $crate::error::Result<()>) -> $crate::error::Result<bool> {
                <T as Device>::replay(self, key, f)
            }
            fn concurrently(&self, tasks: &mut [&mut dyn FnMut() -> $crate::error::Result<()>]) -> $crate::error::Result<()> {
                <T as Device>::concurrently(self, tasks)
            }
            fn buffer_key(&self, buf: &Self::Buf) -> u64 {
                <T as Device>::buffer_key(self, buf)
            }
            $($(
                $(#[$attr])*
                #[inline]
                fn $op(&self, $($arg: $ty),*) -> $crate::error::Result<()> {
                    <T as family::$Trait>::$op(self, $($arg),*)
                }
            )*)*
        }

        /// Every op family of the op list, in declaration order.
        pub const FAMILIES: &[OpFamily] = &[$(
            OpFamily {
                name: stringify!($family),
                ops: &[$(Op { name: stringify!($op), compute: $crate::backend::ops::declare::is_compute!($($f32)?), reference: $crate::backend::ops::declare::name_of!($($reference)?) }),*],
                params: &[$(stringify!($params)),*],
            }
        ),*];
    };
}
pub(crate) use declare_ops;

/// `pub mod <family>;` for every op family: the family files of a backend
/// (`crate::op_list!(crate::backend::ops::family_modules)` in its `mod.rs`).
macro_rules! family_modules {
    ([] $($(#[$family_attr:meta])* $family:ident : $Trait:ident [$($params:ident),*] { $($ops:tt)* })*) => {
        $(pub mod $family;)*
    };
}
pub(crate) use family_modules;

/// `unsafe impl <Trait> for <Params> {}` for every params struct of the op list, e.g.
/// `op_list!(impl_params_repr [cudarc::driver::DeviceRepr])`: the structs are `#[repr(C)]` plain
/// data with the field order of kernels/common.cuh.
macro_rules! impl_params_repr {
    ([$repr:path] $($(#[$family_attr:meta])* $family:ident : $Trait:ident [$($params:ident),*] { $($ops:tt)* })*) => {
        $($(
            // SAFETY: the params structs are `#[repr(C)]` plain data (Pod) with the field order of
            // kernels/common.cuh (tests/cuda_compile.rs checks it).
            unsafe impl $repr for $params {}
        )*)*
    };
}
pub(crate) use impl_params_repr;

/// The call of one op of [`impl_families_by_functions`]: a kernel op gets the backend's context,
/// an op with a reference gets the backend itself (so that it can fall back to the reference).
macro_rules! call_family_function {
    ($self:ident $ctx:ident $family:ident $op:ident ($($arg:ident),*) []) => {
        $family::$op(&$self.$ctx, $($arg),*)
    };
    ($self:ident $ctx:ident $family:ident $op:ident ($($arg:ident),*) [$reference:path]) => {
        $family::$op($self, $($arg),*)
    };
}
pub(crate) use call_family_function;

/// `impl family::<Trait> for <Backend>` for every family, each op calling the function of the same
/// name in the backend's `<family>.rs` with the backend's `<ctx>` field, then the op's arguments
/// (an op with a reference: with the backend, then the arguments), e.g.
/// `op_list!(impl_families_by_functions [CudaBackend, ctx])`. For backends whose family files hold
/// the launchers as functions of a context.
macro_rules! impl_families_by_functions {
    ([$backend:ty, $ctx:ident] $(
        $(#[$family_attr:meta])*
        $family:ident : $Trait:ident [$($params:ident),*] {
            $(
                $(#[$attr:meta])*
                fn $op:ident(&self, $($arg:ident : $ty:ty),* $(,)?) -> Result<()> $(in $f32:ident)? $(= $reference:path)?;
            )*
        }
    )*) => {
        $(
            impl $crate::backend::ops::family::$Trait for $backend {
                $(
                    $(#[$attr])*
                    #[inline]
                    fn $op(&self, $($arg: $ty),*) -> $crate::error::Result<()> {
                        $crate::backend::ops::call_family_function!(self $ctx $family $op ($($arg),*) [$($reference)?])
                    }
                )*
            }
        )*
    };
}
pub(crate) use impl_families_by_functions;
