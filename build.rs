//! Validates every WGSL shader of `shaders/` with naga and embeds them in the binary.
//!
//! Each op family `shaders/<family>.wgsl` is compiled at run time together with one of the
//! preludes (`prelude_plain.wgsl`, or `prelude_subgroup.wgsl` when the adapter has subgroups),
//! appended after it so that naga's line numbers are those of the family file. Both combinations
//! are parsed and validated here; an invalid shader fails `cargo build` with naga's located message.
//!
//! A family `<base>_f16.wgsl` (`matmul_f16.wgsl`) opens with `enable f16;` and is compiled
//! followed by `<base>.wgsl`, whose functions and bindings it uses (its table lists only its own
//! entry points). It is validated with naga's `SHADER_FLOAT16` capability and its entry points are
//! marked `shader_f16: true`: the backend compiles it only on an adapter with `SHADER_F16` (a
//! module with `enable f16;` fails to create a pipeline elsewhere).
//!
//! The generated `$OUT_DIR/shaders.rs` holds the sources and, for every `@compute` entry point,
//! its workgroup size and the bindings it uses (group 0; binding 0 the params uniform, 1.. the
//! storage buffers in the argument order of the CPU function), so that the backend builds its
//! bind group layouts without parsing WGSL at run time.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::fmt::Write as _;
use std::path::Path;

const PRELUDES: [&str; 2] = ["prelude_plain", "prelude_subgroup"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=shaders");
    println!("cargo::rerun-if-changed=kernels");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut families: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ is missing")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl"))
        .map(|name| name.trim_end_matches(".wgsl").to_string())
        .filter(|name| !PRELUDES.contains(&name.as_str()))
        .collect();
    families.sort();

    let read = |name: &str| {
        let path = dir.join(format!("{name}.wgsl"));
        println!("cargo::rerun-if-changed={}", path.display());
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let preludes: Vec<(&str, String)> = PRELUDES.iter().map(|p| (*p, read(p))).collect();

    let mut failures = Vec::new();
    let mut entries = String::new();
    let mut sources = String::new();
    // the entry points of each family compiled so far (a `_f16` family comes after its base)
    let mut names: std::collections::HashMap<&str, Vec<String>> = std::collections::HashMap::new();
    for family in &families {
        let own = read(family);
        let path = format!("shaders/{family}.wgsl");
        let shader_f16 = own.lines().any(|l| l.trim() == "enable f16;");
        let base = family.strip_suffix("_f16").filter(|b| families.iter().any(|f| f == b));
        if shader_f16 != base.is_some() {
            failures.push(format!("{path}: `enable f16;` goes in a family `<base>_f16.wgsl` next to `<base>.wgsl`, and only there"));
            continue;
        }
        let src = match base {
            Some(b) => format!("{own}\n{}", read(b)),
            None => own,
        };
        let inherited: Vec<String> = base.and_then(|b| names.get(b)).cloned().unwrap_or_default();
        let mut mine = Vec::new();
        for (k, (prelude, prelude_src)) in preludes.iter().enumerate() {
            let full = format!("{src}\n{prelude_src}");
            let mut caps = if *prelude == "prelude_subgroup" { Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER } else { Capabilities::empty() };
            if shader_f16 {
                caps |= Capabilities::SHADER_FLOAT16;
            }
            let module = match naga::front::wgsl::parse_str(&full) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{} (with {prelude}.wgsl appended)", e.emit_to_string_with_path(&full, &path)));
                    continue;
                }
            };
            let info = match Validator::new(ValidationFlags::all(), caps).validate(&module) {
                Ok(info) => info,
                Err(e) => {
                    failures.push(format!("{} (with {prelude}.wgsl appended)", e.emit_to_string_with_path(&full, &path)));
                    continue;
                }
            };
            if k > 0 {
                continue; // the entry table comes from the plain variant
            }
            for (i, ep) in module.entry_points.iter().enumerate() {
                if ep.stage != naga::ShaderStage::Compute || inherited.contains(&ep.name) {
                    continue;
                }
                mine.push(ep.name.clone());
                let fi = info.get_entry_point(i);
                let mut bindings = Vec::new();
                for (handle, var) in module.global_variables.iter() {
                    if fi[handle].is_empty() {
                        continue;
                    }
                    let Some(rb) = &var.binding else { continue };
                    if rb.group != 0 {
                        failures.push(format!("{path}: entry `{}` uses group {}; only group 0 is supported", ep.name, rb.group));
                    }
                    let access = match var.space {
                        naga::AddressSpace::Uniform => "Access::Uniform",
                        naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => "Access::ReadWrite",
                        naga::AddressSpace::Storage { .. } => "Access::Read",
                        _ => {
                            failures.push(format!("{path}: binding {} of `{}` is neither uniform nor storage", rb.binding, ep.name));
                            continue;
                        }
                    };
                    if (rb.binding == 0) != (access == "Access::Uniform") {
                        failures.push(format!("{path}: `{}`: binding 0 must be the params uniform and only it", ep.name));
                    }
                    bindings.push((rb.binding, access));
                }
                bindings.sort();
                let list: Vec<String> = bindings.iter().map(|(b, a)| format!("({b}, {a})")).collect();
                let [x, y, z] = ep.workgroup_size;
                writeln!(
                    entries,
                    "    ShaderEntry {{ family: {family:?}, name: {:?}, workgroup: [{x}, {y}, {z}], bindings: &[{}], shader_f16: {shader_f16} }},",
                    ep.name,
                    list.join(", ")
                )
                .unwrap();
            }
        }
        names.insert(family, mine);
        let abs = |f: &str| dir.join(format!("{f}.wgsl")).display().to_string();
        match base {
            Some(b) => writeln!(sources, "    ({family:?}, concat!(include_str!({:?}), \"\\n\", include_str!({:?}))),", abs(family), abs(b)).unwrap(),
            None => writeln!(sources, "    ({family:?}, include_str!({:?})),", abs(family)).unwrap(),
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        panic!("{} invalid WGSL shader(s) in shaders/ (messages above)", failures.len());
    }

    let mut out = String::from("// Generated by build.rs from shaders/*.wgsl: do not edit.\n\n");
    for (name, _) in &preludes {
        let abs = dir.join(format!("{name}.wgsl"));
        writeln!(out, "pub const {}: &str = include_str!({:?});", name.to_uppercase(), abs.display().to_string()).unwrap();
    }
    writeln!(out, "\n/// Every op family: (name, WGSL source without the prelude).\npub const FAMILIES: &[(&str, &str)] = &[\n{sources}];").unwrap();
    writeln!(out, "\n/// Every `@compute` entry point with its workgroup size and bindings.\npub const ENTRIES: &[ShaderEntry] = &[\n{entries}];").unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("shaders.rs");
    std::fs::write(dest, out).unwrap();
}
