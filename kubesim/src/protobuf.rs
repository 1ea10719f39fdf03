//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for
//! the simple built-in kinds kubectl's typed clients write: Namespace, ConfigMap, Secret,
//! ServiceAccount and the authorization reviews (`kubectl create namespace|configmap|secret|
//! serviceaccount`, `kubectl auth can-i`). Other kinds are answered with 415.
//!
//! The envelope is the `k8s\0` magic followed by a `runtime.Unknown` message whose `raw` field
//! holds the object; field numbers follow the Kubernetes `generated.proto` definitions.

use crate::error::ApiError;
use base64::Engine;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    I64,
    I32,
    Bool,
    Msg(&'static str),
    MapStrStr,
    MapStrBytes,
    Time,
}

#[derive(Debug)]
struct F {
    n: u64,
    name: &'static str,
    ty: Ty,
    rep: bool,
}

const fn f(n: u64, name: &'static str, ty: Ty) -> F {
    F {
        n,
        name,
        ty,
        rep: false,
    }
}

const fn r(n: u64, name: &'static str, ty: Ty) -> F {
    F {
        n,
        name,
        ty,
        rep: true,
    }
}

fn schema(msg: &str) -> Option<&'static [F]> {
    use Ty::*;
    Some(match msg {
        "ObjectMeta" => {
            const S: &[F] = &[
                f(1, "name", Str),
                f(2, "generateName", Str),
                f(3, "namespace", Str),
                f(5, "uid", Str),
                f(6, "resourceVersion", Str),
                f(7, "generation", I64),
                f(8, "creationTimestamp", Time),
                f(9, "deletionTimestamp", Time),
                f(10, "deletionGracePeriodSeconds", I64),
                f(11, "labels", MapStrStr),
                f(12, "annotations", MapStrStr),
                r(13, "ownerReferences", Msg("OwnerReference")),
                r(14, "finalizers", Str),
            ];
            S
        }
        "OwnerReference" => {
            const S: &[F] = &[
                f(1, "kind", Str),
                f(3, "name", Str),
                f(4, "uid", Str),
                f(5, "apiVersion", Str),
                f(6, "controller", Bool),
                f(7, "blockOwnerDeletion", Bool),
            ];
            S
        }
        "Time" => {
            const S: &[F] = &[f(1, "seconds", I64), f(2, "nanos", I32)];
            S
        }
        "Namespace" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "spec", Msg("NamespaceSpec")),
            ];
            S
        }
        "NamespaceSpec" => {
            const S: &[F] = &[r(1, "finalizers", Str)];
            S
        }
        "ConfigMap" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "data", MapStrStr),
                f(3, "binaryData", MapStrBytes),
                f(4, "immutable", Bool),
            ];
            S
        }
        "Secret" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "data", MapStrBytes),
                f(3, "type", Str),
                f(4, "stringData", MapStrStr),
                f(5, "immutable", Bool),
            ];
            S
        }
        "ServiceAccount" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                r(2, "secrets", Msg("ObjectReference")),
                r(3, "imagePullSecrets", Msg("LocalObjectReference")),
                f(4, "automountServiceAccountToken", Bool),
            ];
            S
        }
        "ObjectReference" => {
            const S: &[F] = &[
                f(1, "kind", Str),
                f(2, "namespace", Str),
                f(3, "name", Str),
                f(4, "uid", Str),
                f(5, "apiVersion", Str),
                f(6, "resourceVersion", Str),
                f(7, "fieldPath", Str),
            ];
            S
        }
        "LocalObjectReference" => {
            const S: &[F] = &[f(1, "name", Str)];
            S
        }
        "SelfSubjectAccessReview" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "spec", Msg("SelfSubjectAccessReviewSpec")),
            ];
            S
        }
        "SelfSubjectAccessReviewSpec" => {
            const S: &[F] = &[
                f(1, "resourceAttributes", Msg("ResourceAttributes")),
                f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
            ];
            S
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "spec", Msg("SubjectAccessReviewSpec")),
            ];
            S
        }
        "SubjectAccessReviewSpec" => {
            const S: &[F] = &[
                f(1, "resourceAttributes", Msg("ResourceAttributes")),
                f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
                f(3, "user", Str),
                r(4, "groups", Str),
                f(6, "uid", Str),
            ];
            S
        }
        "ResourceAttributes" => {
            const S: &[F] = &[
                f(1, "namespace", Str),
                f(2, "verb", Str),
                f(3, "group", Str),
                f(4, "version", Str),
                f(5, "resource", Str),
                f(6, "subresource", Str),
                f(7, "name", Str),
            ];
            S
        }
        "NonResourceAttributes" => {
            const S: &[F] = &[f(1, "path", Str), f(2, "verb", Str)];
            S
        }
        "SelfSubjectRulesReview" => {
            const S: &[F] = &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "spec", Msg("SelfSubjectRulesReviewSpec")),
            ];
            S
        }
        "SelfSubjectRulesReviewSpec" => {
            const S: &[F] = &[f(1, "namespace", Str)];
            S
        }
        "TypeMeta" => {
            const S: &[F] = &[f(1, "apiVersion", Str), f(2, "kind", Str)];
            S
        }
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

fn malformed() -> ApiError {
    ApiError::bad_request("the object provided is unrecognized: malformed protobuf body")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or_else(malformed)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(malformed)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), ApiError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(malformed()),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ApiError> {
        if self.pos + n > self.b.len() {
            return Err(malformed());
        }
        self.pos += n;
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ApiError> {
    let mut rd = Reader { b, pos: 0 };
    let mut k = String::new();
    let mut v = Value::String(String::new());
    while rd.pos < b.len() {
        let tag = rd.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => k = utf8(rd.bytes()?)?,
            (2, 2) => {
                let raw = rd.bytes()?;
                v = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(utf8(raw)?)
                };
            }
            (_, w) => rd.skip(w)?,
        }
    }
    Ok((k, v))
}

fn decode_msg(msg: &str, b: &[u8], depth: usize) -> Result<Value, ApiError> {
    if depth > 32 {
        return Err(malformed());
    }
    let fields = schema(msg).ok_or_else(malformed)?;
    let mut out = Map::new();
    let mut rd = Reader { b, pos: 0 };
    while rd.pos < b.len() {
        let tag = rd.varint()?;
        let (n, wire) = (tag >> 3, tag & 7);
        let Some(fd) = fields.iter().find(|fd| fd.n == n) else {
            rd.skip(wire)?;
            continue;
        };
        let v = match (fd.ty, wire) {
            (Ty::Str, 2) => json!(utf8(rd.bytes()?)?),
            (Ty::I64, 0) => json!(rd.varint()? as i64),
            (Ty::I32, 0) => json!(rd.varint()? as i64 as i32),
            (Ty::Bool, 0) => json!(rd.varint()? != 0),
            (Ty::Msg(m), 2) => decode_msg(m, rd.bytes()?, depth + 1)?,
            (Ty::Time, 2) => {
                let t = decode_msg("Time", rd.bytes()?, depth + 1)?;
                let secs = t["seconds"].as_i64().unwrap_or(0);
                match chrono::DateTime::from_timestamp(secs, 0) {
                    Some(d) => json!(d.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    None => Value::Null,
                }
            }
            (Ty::MapStrStr, 2) | (Ty::MapStrBytes, 2) => {
                let (k, v) = map_entry(rd.bytes()?, matches!(fd.ty, Ty::MapStrBytes))?;
                let e = out
                    .entry(fd.name.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = e.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (_, w) => {
                rd.skip(w)?;
                continue;
            }
        };
        if fd.rep {
            let e = out
                .entry(fd.name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = e.as_array_mut() {
                a.push(v);
            }
        } else {
            out.insert(fd.name.to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

/// Decode a protobuf-encoded request body into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = || {
        ApiError::unsupported_media_type(
            "application/vnd.kubernetes.protobuf",
            &["application/json", "application/yaml"],
        )
    };
    let rest = body.strip_prefix(b"k8s\x00").ok_or_else(malformed)?;
    let mut rd = Reader { b: rest, pos: 0 };
    let mut type_meta = Value::Null;
    let mut raw: &[u8] = &[];
    while rd.pos < rest.len() {
        let tag = rd.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => type_meta = decode_msg("TypeMeta", rd.bytes()?, 0)?,
            (2, 2) => raw = rd.bytes()?,
            (_, w) => rd.skip(w)?,
        }
    }
    let kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
    if schema(&kind).is_none() || kind == "TypeMeta" || kind == "Time" {
        return Err(unsupported());
    }
    let mut obj = decode_msg(&kind, raw, 0)?;
    obj["apiVersion"] = type_meta["apiVersion"].clone();
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn ld(n: u64, body: &[u8], out: &mut Vec<u8>) {
        varint((n << 3) | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    #[test]
    fn decodes_a_configmap() {
        let mut meta = Vec::new();
        ld(1, b"cm1", &mut meta);
        let mut lbl = Vec::new();
        ld(1, b"app", &mut lbl);
        ld(2, b"x", &mut lbl);
        ld(11, &lbl, &mut meta);
        let mut cm = Vec::new();
        ld(1, &meta, &mut cm);
        let mut entry = Vec::new();
        ld(1, b"k", &mut entry);
        ld(2, b"v", &mut entry);
        ld(2, &entry, &mut cm);
        varint(4 << 3, &mut cm);
        varint(1, &mut cm);
        let mut tm = Vec::new();
        ld(1, b"v1", &mut tm);
        ld(2, b"ConfigMap", &mut tm);
        let mut unknown = b"k8s\x00".to_vec();
        ld(1, &tm, &mut unknown);
        ld(2, &cm, &mut unknown);
        let v = decode(&unknown).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "cm1", "labels": {"app": "x"}}, "data": {"k": "v"}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
        );
        assert!(decode(b"k8s\x00\x0a\xff").is_err());
        assert!(decode(b"nope").is_err());
    }
}
