//! Just enough of the ONNX protobuf format to check a graph before ONNX
//! Runtime ever sees it: its inputs and outputs, and every external-data
//! reference (which must stay inside the bundle folder). A bundle can come
//! from someone else, so this reader trusts nothing: every length is checked
//! and nesting is bounded. A small writer makes real graphs for the tests,
//! the benchmark and `pie doctor`.

use std::fmt;

/// ONNX TensorProto.DataType values the bundle contract uses.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const FLOAT16: i32 = 10;

pub fn dtype_name(t: i32) -> &'static str {
    match t {
        FLOAT => "float32",
        INT64 => "int64",
        FLOAT16 => "float16",
        _ => "other",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSig {
    pub name: String,
    pub elem_type: i32,
    /// `None` when the graph does not state the rank.
    pub dims: Option<Vec<Dim>>,
}

impl fmt::Display for TensorSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, dtype_name(self.elem_type))?;
        match &self.dims {
            None => write!(f, "[rank unknown]"),
            Some(d) => {
                let s: Vec<String> = d
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => v.to_string(),
                        Dim::Named(n) => n.clone(),
                        Dim::Unknown => "?".into(),
                    })
                    .collect();
                write!(f, "[{}]", s.join(","))
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct GraphInfo {
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
    /// `location` of every tensor stored outside the .onnx file.
    pub external_locations: Vec<String>,
}

const MAX_DEPTH: usize = 24;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                let start = self.pos;
                self.skip(len)?;
                Field::Bytes(&self.buf[start..start + len])
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        Ok(Some((field, f)))
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        if end > self.buf.len() {
            return Err("truncated field".into());
        }
        self.pos = end;
        Ok(())
    }
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
}

/// Reads a ModelProto's main graph signature and all external-data locations.
pub fn inspect(model: &[u8]) -> Result<GraphInfo, String> {
    let mut info = GraphInfo::default();
    let mut r = Reader::new(model);
    let mut saw_graph = false;
    while let Some((f, v)) = r.next()? {
        match (f, v) {
            (7, Field::Bytes(g)) => {
                saw_graph = true;
                graph(g, &mut info, true, 0)?;
            }
            // FunctionProto: its nodes, and the defaults of its attributes
            // (attribute_proto), may carry tensors too.
            (25, Field::Bytes(func)) => {
                let mut fr = Reader::new(func);
                while let Some((ff, fv)) = fr.next()? {
                    match (ff, fv) {
                        (7, Field::Bytes(n)) => node(n, &mut info, 1)?,
                        (11, Field::Bytes(a)) => attribute(a, &mut info, 1)?,
                        _ => {}
                    }
                }
            }
            // TrainingInfoProto: its initialization and algorithm graphs.
            (20, Field::Bytes(t)) => {
                let mut tr = Reader::new(t);
                while let Some((tf, tv)) = tr.next()? {
                    if let (1 | 2, Field::Bytes(g)) = (tf, tv) {
                        graph(g, &mut info, false, 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_graph {
        return Err("not an ONNX model (no graph)".into());
    }
    Ok(info)
}

fn graph(g: &[u8], info: &mut GraphInfo, main: bool, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("graphs nested too deeply".into());
    }
    let mut r = Reader::new(g);
    let mut inits: Vec<String> = Vec::new();
    let mut inputs = Vec::new();
    while let Some((f, v)) = r.next()? {
        let Field::Bytes(b) = v else { continue };
        match f {
            1 => node(b, info, depth + 1)?,
            5 => inits.push(tensor(b, info)?),
            11 if main => inputs.push(value_info(b)?),
            12 if main => info.outputs.push(value_info(b)?),
            15 => sparse(b, info)?,
            _ => {}
        }
    }
    if main {
        // Old exporters list initializers among the inputs; they are weights, not inputs.
        info.inputs = inputs.into_iter().filter(|i| !inits.contains(&i.name)).collect();
    }
    Ok(())
}

fn node(n: &[u8], info: &mut GraphInfo, depth: usize) -> Result<(), String> {
    let mut r = Reader::new(n);
    while let Some((f, v)) = r.next()? {
        if let (5, Field::Bytes(a)) = (f, v) {
            attribute(a, info, depth)?;
        }
    }
    Ok(())
}

/// An AttributeProto: its tensor(s), graph(s) and sparse tensor(s).
fn attribute(a: &[u8], info: &mut GraphInfo, depth: usize) -> Result<(), String> {
    let mut ar = Reader::new(a);
    while let Some((af, av)) = ar.next()? {
        let Field::Bytes(b) = av else { continue };
        match af {
            5 | 10 => {
                tensor(b, info)?;
            }
            6 | 11 => graph(b, info, false, depth + 1)?,
            22 | 23 => sparse(b, info)?,
            _ => {}
        }
    }
    Ok(())
}

fn sparse(s: &[u8], info: &mut GraphInfo) -> Result<(), String> {
    let mut r = Reader::new(s);
    while let Some((f, v)) = r.next()? {
        if let (1 | 2, Field::Bytes(b)) = (f, v) {
            tensor(b, info)?;
        }
    }
    Ok(())
}

/// Returns the tensor's name; records its external location, if any.
fn tensor(t: &[u8], info: &mut GraphInfo) -> Result<String, String> {
    let mut r = Reader::new(t);
    let mut name = String::new();
    let mut external = false;
    let mut location = None;
    while let Some((f, v)) = r.next()? {
        match (f, v) {
            (8, Field::Bytes(b)) => name = text(b)?,
            (14, Field::Varint(1)) => external = true,
            (13, Field::Bytes(e)) => {
                let mut er = Reader::new(e);
                let (mut k, mut val) = (String::new(), String::new());
                while let Some((ef, ev)) = er.next()? {
                    match (ef, ev) {
                        (1, Field::Bytes(b)) => k = text(b)?,
                        (2, Field::Bytes(b)) => val = text(b)?,
                        _ => {}
                    }
                }
                if k == "location" {
                    location = Some(val);
                }
            }
            _ => {}
        }
    }
    if external || location.is_some() {
        info.external_locations.push(location.unwrap_or_default());
    }
    Ok(name)
}

fn value_info(v: &[u8]) -> Result<TensorSig, String> {
    let mut r = Reader::new(v);
    let mut sig = TensorSig { name: String::new(), elem_type: 0, dims: None };
    while let Some((f, fv)) = r.next()? {
        match (f, fv) {
            (1, Field::Bytes(b)) => sig.name = text(b)?,
            (2, Field::Bytes(ty)) => {
                let mut tr = Reader::new(ty);
                while let Some((tf, tv)) = tr.next()? {
                    if let (1, Field::Bytes(tt)) = (tf, tv) {
                        let mut ttr = Reader::new(tt);
                        while let Some((ttf, ttv)) = ttr.next()? {
                            match (ttf, ttv) {
                                (1, Field::Varint(e)) => sig.elem_type = e as i32,
                                (2, Field::Bytes(shape)) => sig.dims = Some(dims(shape)?),
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(sig)
}

fn dims(shape: &[u8]) -> Result<Vec<Dim>, String> {
    let mut out = Vec::new();
    let mut r = Reader::new(shape);
    while let Some((f, v)) = r.next()? {
        if let (1, Field::Bytes(d)) = (f, v) {
            let mut dim = Dim::Unknown;
            let mut dr = Reader::new(d);
            while let Some((df, dv)) = dr.next()? {
                match (df, dv) {
                    (1, Field::Varint(x)) => dim = Dim::Fixed(x as i64),
                    (2, Field::Bytes(b)) => dim = Dim::Named(text(b)?),
                    _ => {}
                }
            }
            out.push(dim);
        }
    }
    Ok(out)
}

/// A minimal protobuf writer for building small ONNX graphs in code.
pub mod write {
    #[derive(Default, Clone)]
    pub struct Msg(pub Vec<u8>);

    impl Msg {
        fn key(&mut self, field: u32, wire: u8) {
            self.varint(u64::from(field) << 3 | u64::from(wire));
        }
        fn varint(&mut self, mut v: u64) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return;
                }
                self.0.push(b | 0x80);
            }
        }
        pub fn int(mut self, field: u32, v: i64) -> Self {
            self.key(field, 0);
            self.varint(v as u64);
            self
        }
        pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
            self.key(field, 2);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        pub fn str(self, field: u32, s: &str) -> Self {
            self.bytes(field, s.as_bytes())
        }
        pub fn msg(self, field: u32, m: &Msg) -> Self {
            self.bytes(field, &m.0)
        }
    }

    /// ValueInfoProto of a tensor; a negative dim is a named dynamic axis.
    pub fn value_info(name: &str, elem: i32, dims: &[(i64, &str)]) -> Msg {
        let mut shape = Msg::default();
        for (v, n) in dims {
            let d = if *v < 0 { Msg::default().str(2, n) } else { Msg::default().int(1, *v) };
            shape = shape.msg(1, &d);
        }
        let tt = Msg::default().int(1, i64::from(elem)).msg(2, &shape);
        let ty = Msg::default().msg(1, &tt);
        Msg::default().str(1, name).msg(2, &ty)
    }

    pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> Msg {
        let mut m = Msg::default();
        for d in dims {
            m = m.int(1, *d);
        }
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        m.int(2, i64::from(super::FLOAT)).str(8, name).bytes(9, &raw)
    }

    pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> Msg {
        let mut m = Msg::default();
        for d in dims {
            m = m.int(1, *d);
        }
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        m.int(2, i64::from(super::INT64)).str(8, name).bytes(9, &raw)
    }

    pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Msg {
        let mut m = Msg::default();
        for i in inputs {
            m = m.str(1, i);
        }
        for o in outputs {
            m = m.str(2, o);
        }
        m.str(4, op)
    }

    /// A node with integer attributes, e.g. Concat's `axis`.
    pub fn node_attrs(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, i64)]) -> Msg {
        let mut m = node(op, inputs, outputs);
        for (name, v) in attrs {
            // AttributeProto: name = 1, i = 3, type = 20 (INT = 2).
            let a = Msg::default().str(1, name).int(3, *v).int(20, 2);
            m = m.msg(5, &a);
        }
        m
    }

    /// A node with integer-list attributes, e.g. Conv's `strides`.
    pub fn node_ints(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, &[i64])]) -> Msg {
        let mut m = node(op, inputs, outputs);
        for (name, vs) in attrs {
            // AttributeProto: name = 1, ints = 8, type = 20 (INTS = 7).
            let mut a = Msg::default().str(1, name);
            for v in *vs {
                a = a.int(8, *v);
            }
            m = m.msg(5, &a.int(20, 7));
        }
        m
    }

    /// A float16 tensor (values rounded from f32; tests only need simple ones).
    pub fn tensor_f16(name: &str, dims: &[i64], data: &[f32]) -> Msg {
        let mut m = Msg::default();
        for d in dims {
            m = m.int(1, *d);
        }
        let raw: Vec<u8> = data.iter().flat_map(|v| f32_to_f16(*v).to_le_bytes()).collect();
        m.int(2, i64::from(super::FLOAT16)).str(8, name).bytes(9, &raw)
    }

    /// IEEE half from f32, rounding to nearest (normal range; smaller → 0, larger → inf).
    pub fn f32_to_f16(v: f32) -> u16 {
        let b = v.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        let man = b & 0x7f_ffff;
        if exp <= 0 {
            return sign;
        }
        if exp >= 31 {
            return sign | 0x7c00;
        }
        let mut h = u32::from(sign) | ((exp as u32) << 10) | (man >> 13);
        if man & 0x1000 != 0 {
            h += 1;
        }
        h as u16
    }

    /// ModelProto (IR 8, opset 17) around the given graph parts.
    pub fn model(nodes: &[Msg], inits: &[Msg], inputs: &[Msg], outputs: &[Msg]) -> Vec<u8> {
        let mut g = Msg::default();
        for n in nodes {
            g = g.msg(1, n);
        }
        g = g.str(2, "g");
        for i in inits {
            g = g.msg(5, i);
        }
        for i in inputs {
            g = g.msg(11, i);
        }
        for o in outputs {
            g = g.msg(12, o);
        }
        let opset = Msg::default().str(1, "").int(2, 17);
        Msg::default().int(1, 8).str(2, "pie").msg(7, &g).msg(8, &opset).0
    }
}

#[cfg(test)]
mod tests {
    use super::write::{model, node, value_info, Msg};
    use super::{inspect, Dim, FLOAT};

    #[test]
    fn reads_back_what_it_writes() {
        let w = Msg::default()
            .int(2, 1)
            .str(8, "w")
            .msg(13, &Msg::default().str(1, "location").str(2, "../../etc/passwd"))
            .int(14, 1);
        let m = model(
            &[node("Identity", &["x"], &["y"])],
            &[w],
            &[value_info("x", FLOAT, &[(-1, "N"), (3, "")])],
            &[value_info("y", FLOAT, &[(-1, "N"), (3, "")])],
        );
        let info = inspect(&m).unwrap();
        assert_eq!(info.inputs.len(), 1);
        assert_eq!(info.inputs[0].name, "x");
        assert_eq!(info.inputs[0].dims, Some(vec![Dim::Named("N".into()), Dim::Fixed(3)]));
        assert_eq!(info.outputs[0].name, "y");
        assert_eq!(info.external_locations, vec!["../../etc/passwd".to_string()]);
    }

    /// A tensor stored in "x.bin", hidden in every place the ONNX format allows one.
    #[test]
    fn external_data_is_found_wherever_a_tensor_can_be() {
        let ext = |name: &str| {
            Msg::default()
                .int(2, 1)
                .str(8, name)
                .msg(13, &Msg::default().str(1, "location").str(2, "x.bin"))
                .int(14, 1)
        };
        let attr = |field: u32, m: &Msg| Msg::default().str(1, "value").msg(field, m);
        let node_with = |a: Msg| Msg::default().str(4, "Constant").str(2, "y").msg(5, &a);
        let sparse = Msg::default().msg(1, &ext("v")).msg(2, &Msg::default().int(2, 7).str(8, "i"));
        let sub = Msg::default().str(2, "sub").msg(5, &ext("w"));
        let graph_of = |nodes: &[Msg], inits: &[Msg], sparse_inits: &[Msg]| {
            let mut g = Msg::default().str(2, "g");
            for n in nodes {
                g = g.msg(1, n);
            }
            for i in inits {
                g = g.msg(5, i);
            }
            for s in sparse_inits {
                g = g.msg(15, s);
            }
            g
        };
        let wrap = |g: &Msg| Msg::default().int(1, 8).msg(7, g);
        let empty = graph_of(&[], &[], &[]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("initializer", wrap(&graph_of(&[], &[ext("w")], &[])).0),
            ("Constant value", wrap(&graph_of(&[node_with(attr(5, &ext("t")))], &[], &[])).0),
            ("attribute tensors", wrap(&graph_of(&[node_with(attr(10, &ext("t")))], &[], &[])).0),
            ("subgraph", wrap(&graph_of(&[node_with(attr(6, &sub))], &[], &[])).0),
            ("subgraph list", wrap(&graph_of(&[node_with(attr(11, &sub))], &[], &[])).0),
            ("sparse initializer", wrap(&graph_of(&[], &[], std::slice::from_ref(&sparse))).0),
            ("sparse attribute", wrap(&graph_of(&[node_with(attr(22, &sparse))], &[], &[])).0),
            ("sparse attribute list", wrap(&graph_of(&[node_with(attr(23, &sparse))], &[], &[])).0),
            (
                "function node",
                wrap(&empty).msg(25, &Msg::default().str(1, "f").msg(7, &node_with(attr(5, &ext("t"))))).0,
            ),
            (
                "function attribute default",
                wrap(&empty).msg(25, &Msg::default().str(1, "f").msg(11, &attr(5, &ext("t")))).0,
            ),
            (
                "function subgraph",
                wrap(&empty).msg(25, &Msg::default().str(1, "f").msg(7, &node_with(attr(6, &sub)))).0,
            ),
            (
                "training initialization",
                wrap(&empty).msg(20, &Msg::default().msg(1, &graph_of(&[], &[ext("w")], &[]))).0,
            ),
            (
                "training algorithm",
                wrap(&empty).msg(20, &Msg::default().msg(2, &graph_of(&[], &[ext("w")], &[]))).0,
            ),
        ];
        for (place, m) in cases {
            let info = inspect(&m).unwrap_or_else(|e| panic!("{place}: {e}"));
            assert_eq!(info.external_locations, vec!["x.bin".to_string()], "{place}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inspect(b"\xff\xff\xff").is_err());
        assert!(inspect(b"").is_err());
        assert!(inspect(&[0x3a, 0x7f, 1, 2]).is_err());
    }
}
