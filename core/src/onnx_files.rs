//! The files an ONNX graph needs besides itself: the external data files its tensors name.
//!
//! A tower over 2 GiB cannot be one protobuf message, so exporters write its weights next to
//! `model.onnx` and each initializer names its file (`external_data` entry `location`).
//! ONNX Runtime reads them on its own; pg_clip needs the list to check that every file is
//! there before loading and to cover the weights in the model's stamp. The messages below are
//! the subset of onnx.proto (field numbers from it) that leads to tensors: prost skips every
//! other field, raw weights included, without copying them. Written here because no
//! maintained crate exposes ONNX's protobuf types without also building a runtime.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path};

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    indices: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
    /// 0 DEFAULT (inline), 1 EXTERNAL
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// What pg_clip reads from a graph file without ONNX Runtime.
#[derive(Debug, Default, PartialEq)]
pub struct GraphFiles {
    /// The external data files its tensors name, relative to its folder, sorted, no repeats.
    pub external: Vec<String>,
    /// The operator types of its nodes (subgraphs included).
    pub ops: BTreeSet<String>,
}

/// Read `graph` (a path to a .onnx file). An error names what is wrong: an unreadable or
/// unparsable file, a tensor without a location, or a location that leaves the folder.
pub fn scan(graph: &Path) -> Result<GraphFiles, String> {
    let file = fs::File::open(graph).map_err(|e| format!("cannot read: {e}"))?;
    // SAFETY: the map is read-only and dropped before returning. A file truncated meanwhile
    // could fault the read; model folders are written once by a superuser and not while in use.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot read: {e}"))?;
    let model = ModelProto::decode(&map[..]).map_err(|e| format!("is not a loadable ONNX model: {e}"))?;
    let (mut tensors, mut ops) = (Vec::new(), BTreeSet::new());
    if let Some(g) = &model.graph {
        collect(g, &mut tensors, &mut ops);
    }
    let mut files = BTreeSet::new();
    for t in tensors.into_iter().filter(|t| t.data_location == 1) {
        let loc = t
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| e.value.clone())
            .ok_or_else(|| format!("tensor \"{}\" has external data without a location", t.name))?;
        let p = Path::new(&loc);
        if loc.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!(
                "tensor \"{}\" keeps its data in \"{loc}\", outside the model's folder",
                t.name
            ));
        }
        // "./w.bin" and "w.bin" are one file
        let normal: std::path::PathBuf =
            p.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        files.insert(normal.to_string_lossy().into_owned());
    }
    Ok(GraphFiles { external: files.into_iter().collect(), ops })
}

fn collect<'a>(g: &'a GraphProto, out: &mut Vec<&'a TensorProto>, ops: &mut BTreeSet<String>) {
    out.extend(&g.initializer);
    for s in &g.sparse_initializer {
        out.extend(s.values.iter().chain(&s.indices));
    }
    for n in &g.node {
        if !ops.contains(&n.op_type) {
            ops.insert(n.op_type.clone());
        }
    }
    for a in g.node.iter().flat_map(|n| &n.attribute) {
        out.extend(a.t.iter().chain(&a.tensors));
        for sub in a.g.iter().chain(&a.graphs) {
            collect(sub, out, ops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, location: Option<&str>) -> TensorProto {
        TensorProto {
            name: name.into(),
            external_data: location
                .map(|l| vec![StringStringEntryProto { key: "location".into(), value: l.into() }])
                .unwrap_or_default(),
            data_location: i32::from(location.is_some()),
        }
    }

    fn write(dir: &Path, inits: Vec<TensorProto>, constant: Option<TensorProto>) -> std::path::PathBuf {
        let node = NodeProto {
            op_type: "Constant".into(),
            attribute: vec![AttributeProto { t: constant, g: None, tensors: vec![], graphs: vec![] }],
        };
        let graph = GraphProto { node: vec![node], initializer: inits, sparse_initializer: vec![] };
        let path = dir.join("model.onnx");
        fs::write(&path, ModelProto { graph: Some(graph) }.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn lists_each_file_once_and_refuses_paths_outside() {
        let dir = std::env::temp_dir().join(format!("pg_clip_ext_{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = write(
            &dir,
            vec![tensor("a", Some("weights.bin")), tensor("b", None), tensor("c", Some("weights.bin"))],
            Some(tensor("k", Some("./more.bin"))),
        );
        let found = scan(&p).unwrap();
        assert_eq!(found.external, ["more.bin", "weights.bin"]);
        assert_eq!(found.ops.into_iter().collect::<Vec<_>>(), ["Constant"]);
        let p = write(&dir, vec![tensor("w", Some("../../etc/passwd"))], None);
        assert!(scan(&p).unwrap_err().contains("outside the model's folder"));
        let p = write(&dir, vec![tensor("w", Some("/etc/passwd"))], None);
        assert!(scan(&p).unwrap_err().contains("\"w\" keeps its data in \"/etc/passwd\""));
        fs::write(&p, b"\xff\xff\xff not protobuf").unwrap();
        assert!(scan(&p).unwrap_err().starts_with("is not a loadable ONNX model"));
        fs::remove_dir_all(dir).unwrap();
    }
}
