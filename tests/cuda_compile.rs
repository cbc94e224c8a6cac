//! The CUDA kernels without a GPU: every `kernels/*.cu` compiles with NVRTC (through cudarc, the
//! code path the backend uses at run time) for compute_80 and compute_90, `ptxas -arch=sm_90 -v`
//! reports no register spills, every op of the op list has a `__global__` kernel (and a `_bf16`
//! one when it has compute-typed buffers), and the params structs of `kernels/common.cuh` have
//! the fields of `src/backend/ops/` in the same order.
//!
//! NVRTC comes from the `nvidia-cuda-nvrtc-cu12` wheel in CI (`.ci/run` puts it on
//! `LD_LIBRARY_PATH`) and ptxas from `nvidia-cuda-nvcc-cu12` (`RLHF_PTXAS`, else `ptxas` on PATH).
//! Without them the tests print a SKIPPED line on stderr, unless `CI=true`: then they fail.

#[path = "common/mod.rs"]
mod common;

use rlhf::backend::cuda::kernels::{self, COMMON};
use rlhf::backend::ops::{FAMILIES, OP_NAMES};
use std::io::Write;
use std::process::Command;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether NVRTC is there; prints the skip (or panics in CI) when it is not.
fn nvrtc_or_skip(test: &str) -> bool {
    if kernels::nvrtc_present() {
        return true;
    }
    let why = "libnvrtc.so.12 not found (pip install nvidia-cuda-nvrtc-cu12 and put nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH, or run .ci/run)";
    assert!(!ci(), "CI=true but {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}

fn ptxas() -> Option<String> {
    if let Ok(p) = std::env::var("RLHF_PTXAS") {
        return Some(p);
    }
    Command::new("ptxas").arg("--version").output().ok().filter(|o| o.status.success()).map(|_| "ptxas".to_string())
}

#[test]
fn every_kernel_file_compiles_for_compute_80_and_90() {
    if !nvrtc_or_skip("every_kernel_file_compiles_for_compute_80_and_90") {
        return;
    }
    let _ = writeln!(std::io::stderr(), "NVRTC {:?}", kernels::nvrtc_version());
    for (family, src) in kernels::FAMILIES {
        for arch in ["compute_80", "compute_90"] {
            let ptx = kernels::compile(family, arch).unwrap_or_else(|e| panic!("{e}"));
            let target = format!(".target sm_{}", &arch["compute_".len()..]);
            assert!(ptx.contains(&target), "kernels/{family}.cu: PTX for {arch} lacks `{target}`");
            for entry in kernels::entry_points(src) {
                assert!(ptx.contains(&format!(".entry {entry}(")), "kernels/{family}.cu: no `.entry {entry}` in the PTX for {arch}");
            }
        }
    }
}

/// Kernels that must be in ptxas's report and must not spill (the hot loops of a training step).
const HOT: &[&str] = &[
    "matmul",
    "attention_fwd",
    "attention_bwd",
    "attention_bwd_dkv",
    "attention_decode_fwd",
    "attention_decode_merge",
    "attention_fwd_mma64_bf16",
    "attention_fwd_mma128_bf16",
    "attention_decode_mma64_bf16",
    "attention_decode_mma128_bf16",
    "attention_decode_split_mma64_bf16",
    "attention_bwd_dq_mma64_bf16",
    "attention_bwd_dkv_mma64_bf16",
    "attention_bwd_dq_mma128_bf16",
    "attention_bwd_dkv_mma128_bf16",
    "logprob_chunk_stats",
    "logprob_gather_bwd",
    "layernorm_fwd",
    "layernorm_bwd",
    "rmsnorm_fwd",
    "rmsnorm_bwd",
    "norm_dw",
    "adamw",
    "adamw_many",
    "sum_squares_many",
    "cross_entropy_fwd",
    "sample",
    "matmul_bf16",
    "attention_fwd_bf16",
    "attention_bwd_bf16",
    "attention_bwd_dkv_bf16",
    "attention_decode_fwd_bf16",
    "layernorm_fwd_bf16",
    "layernorm_bwd_bf16",
    "rmsnorm_fwd_bf16",
    "rmsnorm_bwd_bf16",
    "norm_dw_bf16",
    "adamw_bf16",
    "adamw_many_bf16",
    "sum_squares_many_bf16",
    "cross_entropy_fwd_bf16",
    "sample_bf16",
];

/// `(kernel, spill store bytes, spill load bytes)` from `ptxas -v` output.
fn spills(report: &str) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_string());
        } else if line.contains("spill stores") {
            let num = |key: &str| -> u64 {
                let before = line.split(key).next().unwrap_or("");
                before.split_whitespace().next_back().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
            };
            if let Some(name) = current.take() {
                out.push((name, num("bytes spill stores"), num("bytes spill loads")));
            }
        }
    }
    out
}

#[test]
fn spill_parser_reads_ptxas_reports() {
    let report = "ptxas info    : Function properties for attention_fwd\n    0 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
                  ptxas info    : Function properties for adamw\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";
    assert_eq!(spills(report), vec![("attention_fwd".to_string(), 8, 12), ("adamw".to_string(), 0, 0)]);
}

#[test]
fn no_register_spills_on_sm_90() {
    if !nvrtc_or_skip("no_register_spills_on_sm_90") {
        return;
    }
    let Some(ptxas) = ptxas() else {
        let why = "ptxas not found (pip install nvidia-cuda-nvcc-cu12 and set RLHF_PTXAS, or run .ci/run)";
        assert!(!ci(), "CI=true but {why}");
        let _ = writeln!(std::io::stderr(), "SKIPPED no_register_spills_on_sm_90: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for (family, _) in kernels::FAMILIES {
        let ptx = kernels::compile(family, "compute_90").unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(format!("{family}.ptx"));
        std::fs::write(&path, ptx).unwrap();
        let out = Command::new(&ptxas).args(["-arch=sm_90", "-v"]).arg(&path).arg("-o").arg(dir.path().join(format!("{family}.cubin"))).output().unwrap();
        let report = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "ptxas failed on kernels/{family}.cu:\n{report}");
        all.extend(spills(&report));
    }
    for hot in HOT {
        assert!(all.iter().any(|(name, _, _)| name == hot), "kernel `{hot}` missing from the ptxas reports");
    }
    let spilling: Vec<_> = all.iter().filter(|(_, st, ld)| *st > 0 || *ld > 0).collect();
    assert!(spilling.is_empty(), "register spills (kernel, store bytes, load bytes): {spilling:?}");
}

/// NVRTC passes inline PTX through unchecked: ptxas assembles the tensor-core wrappers of
/// `common.cuh` (mma, ldmatrix, cp.async; used by `tests/cuda_emu/selftest.cu`'s `tc_*` kernels)
/// for sm_80 and sm_90.
#[test]
fn tensor_core_wrappers_assemble_for_sm_80_and_90() {
    if !nvrtc_or_skip("tensor_core_wrappers_assemble_for_sm_80_and_90") {
        return;
    }
    let Some(ptxas) = ptxas() else {
        assert!(!ci(), "CI=true but ptxas was not found");
        let _ = writeln!(std::io::stderr(), "SKIPPED tensor_core_wrappers_assemble_for_sm_80_and_90: no ptxas");
        return;
    };
    let src = kernels::full_source("emu_selftest", include_str!("cuda_emu/selftest.cu"));
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, kernels::compile_options("emu_selftest", "compute_80")).unwrap_or_else(|e| panic!("{e:?}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("selftest.ptx");
    std::fs::write(&path, ptx.to_src()).unwrap();
    for arch in ["sm_80", "sm_90"] {
        let out = Command::new(&ptxas).arg(format!("-arch={arch}")).arg(&path).arg("-o").arg(dir.path().join("selftest.cubin")).output().unwrap();
        assert!(out.status.success(), "ptxas -arch={arch} failed on selftest.cu:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    for instruction in ["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", "cp.async.cg.shared.global"] {
        assert!(ptx.to_src().contains(instruction), "`{instruction}` missing from the PTX");
    }
}

/// Every kernel op of the op list (an op without a reference composition) has its
/// `extern "C" __global__` kernel in its family's `kernels/<family>.cu`, and no kernel is
/// defined twice.
#[test]
fn every_op_has_a_cuda_kernel() {
    for family in FAMILIES {
        let entries = kernels::entry_points(kernels::family_source(family.name).unwrap());
        for op in family.kernel_ops() {
            assert!(entries.contains(&op), "op `{op}` has no `extern \"C\" __global__` kernel in kernels/{}.cu", family.name);
        }
    }
    let entries: Vec<&str> = kernels::FAMILIES.iter().flat_map(|(_, src)| kernels::entry_points(src)).collect();
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        assert!(seen.insert(*e), "kernel `{e}` is defined twice in kernels/");
    }
}

/// Ops whose compute-typed buffers reach no kernel of their own in bf16: the log-prob gather's
/// `h`, `w`, `dh`, `dw` go through cuBLAS bf16 products into an f32 logits tile (read by the f32
/// kernels) and through the cast kernels (src/backend/cuda/logprob_gather.rs).
const BF16_THROUGH_CUBLAS: &[&str] = &["logprob_gather_fwd", "logprob_gather_bwd"];

#[test]
fn every_op_with_compute_buffers_has_a_bf16_kernel() {
    let entries: Vec<&str> = kernels::FAMILIES.iter().flat_map(|(_, src)| kernels::entry_points(src)).collect();
    let ops = common::ops_with_compute_buffers();
    for must in ["matmul", "attention_fwd", "copy", "adamw", "sum_squares", "logprob_gather_bwd"] {
        assert!(ops.contains(&must), "`{must}` not found among the ops with compute buffers: {ops:?}");
    }
    assert!(!ops.contains(&"gae") && !ops.contains(&"kl_penalty_bwd") && !ops.contains(&"decode_advance"), "{ops:?}");
    let kernel_ops: Vec<&str> = FAMILIES.iter().flat_map(|f| f.kernel_ops()).collect();
    for op in ops.iter().filter(|op| kernel_ops.contains(op) && !BF16_THROUGH_CUBLAS.contains(op)) {
        assert!(entries.contains(&format!("{op}_bf16").as_str()), "op `{op}` has compute buffers but no `{op}_bf16` kernel in kernels/");
    }
    for cast in ["copy_f32_to_bf16", "copy_bf16_to_f32", "matmul_bf16_out_f32"] {
        assert!(entries.contains(&cast), "no `{cast}` kernel");
    }
    // no stray bf16 entry for an op whose buffers are all f32
    for op in OP_NAMES.iter().filter(|op| !ops.contains(op)) {
        assert!(!entries.contains(&format!("{op}_bf16").as_str()), "`{op}_bf16` exists but every buffer of `{op}` is f32");
    }
}

/// The files of `dir` with extension `ext`, without it, sorted.
fn family_files(dir: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(ext).map(str::to_string))
        .collect();
    names.sort();
    names
}

/// `kernels/*.cu` and `shaders/*.wgsl` hold exactly the op families of the op list (whose
/// `kernels/<family>.cu` are embedded: a missing one fails the build). A WGSL precision variant of
/// a family (matmul_f16: f16 operand tiles, compiled only where the adapter has SHADER_F16) has no
/// .cu file of its own: CUDA reaches those precisions through cuBLAS compute types in the
/// family's own launcher.
#[test]
fn kernel_files_are_the_op_families() {
    let mut declared: Vec<String> = FAMILIES.iter().map(|f| f.name.to_string()).collect();
    declared.sort();
    assert_eq!(family_files("kernels", ".cu"), declared, "kernels/*.cu and the op list name different op families");
    let mut wgsl = family_files("shaders", ".wgsl");
    let all = wgsl.clone();
    wgsl.retain(|n| !n.starts_with("prelude") && n.strip_suffix("_f16").is_none_or(|base| !all.iter().any(|f| f == base)));
    assert_eq!(wgsl, declared, "shaders/*.wgsl and the op list name different op families");
    let embedded: Vec<&str> = kernels::FAMILIES.iter().map(|(f, _)| *f).collect();
    assert_eq!(embedded, FAMILIES.iter().map(|f| f.name).collect::<Vec<_>>(), "kernels::FAMILIES is not the op list's families");
}

/// Field names of `struct Name { ... }` in C (`u32 a, b; float c;`).
fn c_fields(src: &str, name: &str) -> Option<Vec<String>> {
    let start = src.find(&format!("struct {name} {{"))?;
    let body = &src[start..][..src[start..].find("};")?];
    let body = &body[body.find('{')? + 1..];
    let mut fields = Vec::new();
    for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let decl = decl.split_once(char::is_whitespace).map_or(decl, |(_ty, rest)| rest);
        fields.extend(decl.split(',').map(|f| f.trim().to_string()));
    }
    Some(fields)
}

/// Field names of `pub struct Name { pub a: u32, ... }` in Rust.
fn rust_fields(src: &str, name: &str) -> Option<Vec<String>> {
    let start = src.find(&format!("pub struct {name} {{"))?;
    let body = &src[start..][..src[start..].find("\n}")?];
    Some(body.lines().filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':').map(|(f, _)| f.trim().to_string())).collect())
}

/// Every params struct the op list declares has the fields of its `kernels/common.cuh` struct in
/// the same order, and every `pub struct *Params` of `src/backend/ops/` is declared (so it gets its
/// `DeviceRepr` impl).
#[test]
fn params_structs_match_ops_rs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/ops");
    let mut n = 0;
    let mut declared: Vec<&str> = Vec::new();
    for family in FAMILIES {
        let src = std::fs::read_to_string(dir.join(format!("{}.rs", family.name))).unwrap_or_default();
        for name in family.params {
            let rust = rust_fields(&src, name).unwrap_or_else(|| panic!("src/backend/ops/{}.rs has no struct {name}", family.name));
            let c = c_fields(COMMON, name).unwrap_or_else(|| panic!("kernels/common.cuh has no struct {name}"));
            assert_eq!(c, rust, "struct {name}: kernels/common.cuh and src/backend/ops/{}.rs disagree", family.name);
            n += 1;
        }
        declared.extend(family.params);
    }
    assert!(n >= 20, "the op list declares only {n} params structs");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in src.lines() {
            if let Some(name) = line.strip_prefix("pub struct ").and_then(|r| r.strip_suffix(" {")).filter(|n| n.ends_with("Params")) {
                assert!(declared.contains(&name), "params struct {name} is in no family's params list of the op list");
            }
        }
    }
}

#[test]
fn full_source_pastes_the_header_and_keeps_line_numbers() {
    let src = kernels::family_source("elementwise").unwrap();
    let full = kernels::full_source("elementwise", src);
    assert!(!full.contains("#include \"common.cuh\""));
    assert!(full.contains("struct ElementwiseParams"));
    let include_line = src.lines().position(|l| l.trim() == "#include \"common.cuh\"").unwrap() + 1;
    assert!(full.contains(&format!("#line {} \"kernels/elementwise.cu\"", include_line + 1)));
    let entries = ["fill", "fill_bf16", "copy", "copy_bf16", "copy_f32_to_bf16", "copy_bf16_to_f32", "add", "add_bf16", "add_inplace", "add_inplace_bf16"];
    assert_eq!(kernels::entry_points(src), [&entries[..], &["scale_inplace", "scale_inplace_bf16"]].concat());
}

#[test]
fn compile_errors_name_the_file_and_line() {
    if !nvrtc_or_skip("compile_errors_name_the_file_and_line") {
        return;
    }
    let opts = kernels::compile_options("broken", "compute_80");
    let src = kernels::full_source("broken", "#include \"common.cuh\"\nextern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }\n");
    let e = cudarc::nvrtc::compile_ptx_with_opts(src, opts).unwrap_err();
    let cudarc::nvrtc::CompileError::CompileError { log, .. } = e else { panic!("not a compile error: {e:?}") };
    let log = log.to_string_lossy();
    assert!(log.contains("kernels/broken.cu(2)") && log.contains("undefined_name"), "{log}");
}

/// `(kernel, number of parameters)` of every `extern "C" __global__` kernel.
fn kernel_arities() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (_, src) in kernels::FAMILIES {
        for name in kernels::entry_points(src) {
            let at = src.find(&format!("void {name}(")).unwrap() + name.len() + 6;
            let params = &src[at..at + src[at..].find(')').unwrap()];
            out.push((name.to_string(), params.split(',').count()));
        }
    }
    out
}

/// Top-level comma-separated pieces of `s`.
fn split_args(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, ch) in s.char_indices() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

#[test]
fn every_launch_passes_as_many_arguments_as_its_kernel_takes() {
    let arities = kernel_arities();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/backend/cuda");
    let mut launches = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let mut rest = src.as_str();
        while let Some(at) = rest.find("launch!(ctx,") {
            rest = &rest[at + "launch!(".len()..];
            let (mut depth, mut end) = (1, 0);
            for (i, ch) in rest.char_indices() {
                depth += match ch {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let args = split_args(&rest[..end]);
            // `"name"[dtype]` launches `name` (f32) or `name_bf16`: both must exist with this arity
            let (name, typed) = match args[2].split_once('[') {
                Some((name, _)) => (name.trim_matches('"'), true),
                None => (args[2].trim_matches('"'), false),
            };
            let bf16 = format!("{name}_bf16");
            for kernel in if typed { vec![name, bf16.as_str()] } else { vec![name] } {
                let (_, want) = arities.iter().find(|(k, _)| k == kernel).unwrap_or_else(|| panic!("{}: launch of unknown kernel `{kernel}`", path.display()));
                assert_eq!(args.len() - 4, *want, "{}: `{kernel}` launched with {} arguments, the kernel takes {want}", path.display(), args.len() - 4);
            }
            launches += 1;
        }
    }
    assert!(launches >= 40, "found only {launches} launches");
}

/// A family compiles to a CUBIN for a real architecture (what the backend loads first, so that a
/// driver older than this NVRTC still runs it): an ELF image that names the family's kernels.
#[test]
fn a_family_compiles_to_a_cubin_for_sm_90() {
    if !nvrtc_or_skip("a_family_compiles_to_a_cubin_for_sm_90") {
        return;
    }
    let cubin = rlhf::backend::cuda::kernels::compile_cubin("elementwise", "sm_90").unwrap();
    assert_eq!(&cubin[..4], b"\x7fELF", "not an ELF image");
    let names = rlhf::backend::cuda::kernels::entry_points(rlhf::backend::cuda::kernels::family_source("elementwise").unwrap());
    assert!(!names.is_empty());
    for name in names {
        assert!(cubin.windows(name.len()).any(|w| w == name.as_bytes()), "the CUBIN lacks `{name}`");
    }
    let err = rlhf::backend::cuda::kernels::compile_cubin("elementwise", "sm_1").unwrap_err().to_string();
    assert!(err.contains("sm_1"), "{err}");
}
