//! OTLP log records written straight as protobuf, for [`LogExport`](crate::LogExport).
//!
//! Why not the SDK's records: an `SdkLogRecord` is built on the sending thread, then on export
//! converted into the generated protobuf types (a `String` for every attribute key and value),
//! grouped by scope in a hash map, measured, encoded and dropped. Measured end to end that was
//! about 5 µs of background CPU per audit record, most of the layer's cost on one core and a
//! tenth of a core under a 20,000-failures-a-second attack. Here a record is written once,
//! field by field, into a reusable buffer, and the export request is that buffer behind a
//! fixed header: no allocation per record, nothing to convert.
//!
//! The wire format is the one in `opentelemetry/proto/logs/v1/logs.proto`; the tests decode
//! what is written here with the official `opentelemetry-proto` types.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::logs::Severity;
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use prost::bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message as _;

/// Most records in one batch (one export request) unless `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`
/// says otherwise (see [`LogExport::max_batch`](crate::LogExport::max_batch)); see
/// [`LogBatch::is_full`].
///
/// Four times the SDK's batch log processor's 512: an export costs its thread (and the
/// collector) about the same whatever its size, so the export's CPU per record falls by half
/// from 512 to 2,048 (measured in `docs/performance.md`), while a batch of audit records
/// (~400 bytes each) stays under 1 MiB, a quarter of what a gRPC collector takes by default.
pub const MAX_EXPORT_BATCH: usize = 2048;
/// Most encoded bytes in one batch (one export request), far below the 4 MiB a gRPC server
/// takes by default.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// An attribute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    /// A string.
    Str(&'a str),
    /// An integer.
    I64(i64),
    /// A floating-point number.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl<'a> From<&'a str> for AttrValue<'a> {
    fn from(v: &'a str) -> Self {
        Self::Str(v)
    }
}

impl From<i64> for AttrValue<'_> {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<f64> for AttrValue<'_> {
    fn from(v: f64) -> Self {
        Self::F64(v)
    }
}

impl From<bool> for AttrValue<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// Log records encoded as OTLP `LogRecord` messages, ready for
/// [`LogExport::send`](crate::LogExport::send): one export request.
///
/// ```
/// use authwatch_otel::LogBatch;
/// use opentelemetry::logs::Severity;
///
/// let mut batch = LogBatch::default();
/// batch.push(|r| {
///     r.time(std::time::SystemTime::now())
///         .severity(Severity::Warn)
///         .event_name("auth.request")
///         .body("auth.request")
///         .attr("auth.outcome", "failure")
///         .attr("auth.duration_ms", 12.5);
/// });
/// assert_eq!(batch.len(), 1);
/// ```
#[derive(Debug)]
pub struct LogBatch {
    /// The records, each as field 2 of `ScopeLogs` (tag, length, message).
    buf: Vec<u8>,
    records: usize,
    /// The record being written.
    scratch: Vec<u8>,
    /// Records at which the batch is full.
    max_records: usize,
}

impl Default for LogBatch {
    /// An empty batch, full at [`MAX_EXPORT_BATCH`] records.
    fn default() -> Self {
        Self::with_max_records(MAX_EXPORT_BATCH)
    }
}

impl LogBatch {
    /// An empty batch, full at `max_records` records (at least 1) or 1 MiB.
    #[must_use]
    pub fn with_max_records(max_records: usize) -> Self {
        Self {
            buf: Vec::new(),
            records: 0,
            scratch: Vec::new(),
            max_records: max_records.max(1),
        }
    }

    /// Sets the records at which the batch is full (at least 1).
    #[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(dead_code))]
    pub(crate) fn set_max_records(&mut self, max_records: usize) {
        self.max_records = max_records.max(1);
    }

    /// Records in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the batch has no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Whether the batch should be sent before another record is added: it holds its most
    /// records ([`MAX_EXPORT_BATCH`] unless built
    /// [`with_max_records`](Self::with_max_records)) or 1 MiB.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.records >= self.max_records || self.buf.len() >= MAX_BATCH_BYTES
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    /// Bytes the batch holds room for.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The encoded records.
    #[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(dead_code))]
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.buf
    }

    /// Adds one record, written by `write`. A record is stamped with the time it was added as
    /// its observed time unless `write` set one.
    pub fn push(&mut self, write: impl FnOnce(&mut RecordWriter<'_>)) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut w = RecordWriter {
            out: &mut scratch,
            observed: false,
        };
        write(&mut w);
        if !w.observed {
            w.observed_time(SystemTime::now());
        }
        put_key(2, WireType::LengthDelimited, &mut self.buf);
        put_varint(scratch.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(&scratch);
        self.records += 1;
        self.scratch = scratch;
    }
}

/// Writes the fields of one record; see [`LogBatch::push`]. Fields may come in any order;
/// attributes keep theirs.
#[derive(Debug)]
pub struct RecordWriter<'a> {
    out: &'a mut Vec<u8>,
    observed: bool,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Length of a length-delimited field of `len` bytes with a one-byte key (tags 1 to 15).
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Length of an `AnyValue` message holding `v`.
fn any_value_len(v: AttrValue<'_>) -> usize {
    match v {
        AttrValue::Str(s) => field_len(s.len()),
        AttrValue::I64(i) => 1 + encoded_len_varint(i as u64),
        AttrValue::F64(_) => 1 + 8,
        AttrValue::Bool(_) => 1 + 1,
    }
}

// The record's own writers: the same bytes as prost's `encode_key` and `encode_varint`, written
// straight into the `Vec` (prost's are generic over `BufMut` and out of line, a call and a
// capacity check per byte: measured, a fifth of the audit worker's instructions per record).

/// The key of field `tag` (1 to 15, one byte) of wire type `wire`.
#[inline]
fn put_key(tag: u8, wire: WireType, out: &mut Vec<u8>) {
    debug_assert!((1..16).contains(&tag));
    out.push(tag << 3 | wire as u8);
}

#[inline]
fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_bytes(tag: u8, b: &[u8], out: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, out);
    put_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

#[inline]
fn put_any_value(v: AttrValue<'_>, out: &mut Vec<u8>) {
    match v {
        AttrValue::Str(s) => put_bytes(1, s.as_bytes(), out),
        AttrValue::Bool(b) => {
            put_key(2, WireType::Varint, out);
            put_varint(u64::from(b), out);
        }
        AttrValue::I64(i) => {
            put_key(3, WireType::Varint, out);
            // int64: two's complement as a 64-bit varint.
            put_varint(i as u64, out);
        }
        AttrValue::F64(f) => {
            put_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Fields of a log record encoded once, to be added to many records with
/// [`RecordWriter::fields`]: the parts that are the same in every record of a kind (its
/// severity, name, body, constant attributes) cost a copy instead of an encoding each time.
///
/// ```
/// use authwatch_otel::{LogBatch, LogFields};
/// use opentelemetry::logs::Severity;
///
/// let fixed = LogFields::encode(|r| {
///     r.severity(Severity::Warn).event_name("auth.request").attr("audit.class", "security");
/// });
/// let mut batch = LogBatch::default();
/// batch.push(|r| {
///     r.fields(&fixed).attr("auth.outcome", "failure");
/// });
/// assert_eq!(batch.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFields {
    bytes: Vec<u8>,
    /// They hold an observed time.
    observed: bool,
}

impl LogFields {
    /// The fields `write` writes, encoded.
    pub fn encode(write: impl FnOnce(&mut RecordWriter<'_>)) -> Self {
        let mut bytes = Vec::new();
        let mut w = RecordWriter {
            out: &mut bytes,
            observed: false,
        };
        write(&mut w);
        let observed = w.observed;
        Self { bytes, observed }
    }
}

impl RecordWriter<'_> {
    /// When the event happened (`time_unix_nano`).
    #[inline]
    pub fn time(&mut self, t: SystemTime) -> &mut Self {
        self.time_nanos(nanos(t))
    }

    /// When the event happened, in nanoseconds since the Unix epoch (`time_unix_nano`).
    #[inline]
    pub fn time_nanos(&mut self, t: u64) -> &mut Self {
        put_key(1, WireType::SixtyFourBit, self.out);
        self.out.extend_from_slice(&t.to_le_bytes());
        self
    }

    /// When the event was observed (`observed_time_unix_nano`); the time of
    /// [`push`](LogBatch::push) when not set.
    #[inline]
    pub fn observed_time(&mut self, t: SystemTime) -> &mut Self {
        self.observed_time_nanos(nanos(t))
    }

    /// When the event was observed, in nanoseconds since the Unix epoch
    /// (`observed_time_unix_nano`).
    #[inline]
    pub fn observed_time_nanos(&mut self, t: u64) -> &mut Self {
        put_key(11, WireType::SixtyFourBit, self.out);
        self.out.extend_from_slice(&t.to_le_bytes());
        self.observed = true;
        self
    }

    /// The severity number and its text (`WARN`, `INFO`, …).
    pub fn severity(&mut self, s: Severity) -> &mut Self {
        put_key(2, WireType::Varint, self.out);
        put_varint(s as u64, self.out);
        put_bytes(3, s.name().as_bytes(), self.out);
        self
    }

    /// A string body.
    pub fn body(&mut self, s: &str) -> &mut Self {
        let v = AttrValue::Str(s);
        put_key(5, WireType::LengthDelimited, self.out);
        put_varint(any_value_len(v) as u64, self.out);
        put_any_value(v, self.out);
        self
    }

    /// The event name (`event_name`).
    pub fn event_name(&mut self, s: &str) -> &mut Self {
        put_bytes(12, s.as_bytes(), self.out);
        self
    }

    /// One attribute.
    #[inline]
    pub fn attr<'v>(&mut self, key: &str, value: impl Into<AttrValue<'v>>) -> &mut Self {
        let v = value.into();
        if let AttrValue::Str(s) = v {
            // The usual case, a short key and value: every length fits in one byte, and the
            // four bytes before the key and the four before the value are one copy each.
            let (k, s) = (key.as_bytes(), s.as_bytes());
            let kv = 6 + k.len() + s.len();
            if kv < 0x80 {
                let out = &mut *self.out;
                out.reserve(kv + 2);
                out.extend_from_slice(&[
                    6 << 3 | WireType::LengthDelimited as u8,
                    kv as u8,
                    1 << 3 | WireType::LengthDelimited as u8,
                    k.len() as u8,
                ]);
                out.extend_from_slice(k);
                out.extend_from_slice(&[
                    2 << 3 | WireType::LengthDelimited as u8,
                    (2 + s.len()) as u8,
                    1 << 3 | WireType::LengthDelimited as u8,
                    s.len() as u8,
                ]);
                out.extend_from_slice(s);
                return self;
            }
        }
        let av = any_value_len(v);
        put_key(6, WireType::LengthDelimited, self.out);
        put_varint((field_len(key.len()) + field_len(av)) as u64, self.out);
        put_bytes(1, key.as_bytes(), self.out);
        put_key(2, WireType::LengthDelimited, self.out);
        put_varint(av as u64, self.out);
        put_any_value(v, self.out);
        self
    }

    /// Fields encoded beforehand, as if written here.
    #[inline]
    pub fn fields(&mut self, f: &LogFields) -> &mut Self {
        self.out.extend_from_slice(&f.bytes);
        self.observed |= f.observed;
        self
    }

    /// The trace and span the record belongs to, and the trace flags.
    pub fn trace_context(&mut self, trace: TraceId, span: SpanId, flags: TraceFlags) -> &mut Self {
        put_key(8, WireType::ThirtyTwoBit, self.out);
        self.out
            .extend_from_slice(&u32::from(flags.to_u8()).to_le_bytes());
        put_bytes(9, &trace.to_bytes(), self.out);
        put_bytes(10, &span.to_bytes(), self.out);
        self
    }
}

/// A length-delimited field into the request (its frame, written once per batch).
fn put_frame_bytes(tag: u32, b: &[u8], out: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.put_slice(b);
}

/// What comes before and after a batch's records in an `ExportLogsServiceRequest`: the
/// resource and the scope, encoded once.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(dead_code))]
pub(crate) struct RequestFrame {
    resource: Vec<u8>,
    resource_schema_url: String,
    scope: Vec<u8>,
    scope_schema_url: String,
}

#[cfg_attr(not(any(feature = "grpc", feature = "http")), allow(dead_code))]
impl RequestFrame {
    pub(crate) fn new(
        resource: &opentelemetry_sdk::Resource,
        scope: &opentelemetry::InstrumentationScope,
    ) -> Self {
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        let attrs = ResourceAttributesWithSchema::from(resource);
        let resource_msg = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: attrs.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        };
        let scope_msg = opentelemetry_proto::tonic::common::v1::InstrumentationScope::from((
            scope.clone(),
            None,
        ));
        Self {
            resource: resource_msg.encode_to_vec(),
            resource_schema_url: attrs.schema_url.unwrap_or_default(),
            scope: scope_msg.encode_to_vec(),
            scope_schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        }
    }

    fn optional_string_len(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            field_len(s.len())
        }
    }

    /// The whole `ExportLogsServiceRequest` for `batch`, appended to `out`.
    pub(crate) fn write(&self, batch: &LogBatch, out: &mut impl BufMut) {
        let records = batch.encoded();
        let scope_logs = field_len(self.scope.len())
            + records.len()
            + Self::optional_string_len(&self.scope_schema_url);
        let resource_logs = field_len(self.resource.len())
            + field_len(scope_logs)
            + Self::optional_string_len(&self.resource_schema_url);
        // ExportLogsServiceRequest.resource_logs (1)
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(resource_logs as u64, out);
        // ResourceLogs.resource (1)
        put_frame_bytes(1, &self.resource, out);
        // ResourceLogs.scope_logs (2)
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(scope_logs as u64, out);
        // ScopeLogs.scope (1), ScopeLogs.log_records (2, already framed), ScopeLogs.schema_url (3)
        put_frame_bytes(1, &self.scope, out);
        out.put_slice(records);
        if !self.scope_schema_url.is_empty() {
            put_frame_bytes(3, self.scope_schema_url.as_bytes(), out);
        }
        // ResourceLogs.schema_url (3)
        if !self.resource_schema_url.is_empty() {
            put_frame_bytes(3, self.resource_schema_url.as_bytes(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Value {
        v.as_ref().unwrap().value.clone().unwrap()
    }

    #[test]
    fn a_batch_decodes_with_the_official_types() {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "auth")])
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.26.0",
            )
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("authwatch::audit")
            .with_version("1.2.3")
            .build();
        let frame = RequestFrame::new(&resource, &scope);
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let long = "é".repeat(300);
        let mut batch = LogBatch::default();
        batch.push(|r| {
            r.time(t)
                .observed_time(t + std::time::Duration::from_millis(1))
                .severity(Severity::Warn)
                .body("auth.request")
                .event_name("auth.request")
                .attr("audit.class", "security")
                .attr("audit.retention_days", 365_i64)
                .attr("negative", -3_i64)
                .attr("auth.duration_ms", 12.25)
                .attr("flag", true)
                .attr("user_agent.original", long.as_str())
                .trace_context(
                    TraceId::from_bytes([7; 16]),
                    SpanId::from_bytes([9; 8]),
                    TraceFlags::SAMPLED,
                );
        });
        batch.push(|r| {
            r.severity(Severity::Info).body("second");
        });
        assert_eq!(batch.len(), 2);
        let mut out = Vec::new();
        frame.write(&batch, &mut out);
        let req = ExportLogsServiceRequest::decode(out.as_slice()).expect("valid protobuf");
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        assert_eq!(rl.schema_url, "https://opentelemetry.io/schemas/1.26.0");
        let res = rl.resource.as_ref().unwrap();
        assert!(res
            .attributes
            .iter()
            .any(|kv| kv.key == "service.name"
                && value(&kv.value) == Value::StringValue("auth".into())));
        assert_eq!(rl.scope_logs.len(), 1);
        let sl = &rl.scope_logs[0];
        let sc = sl.scope.as_ref().unwrap();
        assert_eq!(
            (sc.name.as_str(), sc.version.as_str()),
            ("authwatch::audit", "1.2.3")
        );
        assert_eq!(sl.log_records.len(), 2);
        let r = &sl.log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(r.observed_time_unix_nano, 1_700_000_000_124_456_789);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(value(&r.body), Value::StringValue("auth.request".into()));
        assert_eq!(r.event_name, "auth.request");
        let attrs: Vec<(String, Value)> = r
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value)))
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("audit.class".into(), Value::StringValue("security".into())),
                ("audit.retention_days".into(), Value::IntValue(365)),
                ("negative".into(), Value::IntValue(-3)),
                ("auth.duration_ms".into(), Value::DoubleValue(12.25)),
                ("flag".into(), Value::BoolValue(true)),
                (
                    "user_agent.original".into(),
                    Value::StringValue(long.clone())
                ),
            ]
        );
        assert_eq!(r.trace_id, vec![7; 16]);
        assert_eq!(r.span_id, vec![9; 8]);
        assert_eq!(r.flags, 1);
        let second = &sl.log_records[1];
        assert_eq!(second.severity_text, "INFO");
        assert_eq!(second.time_unix_nano, 0);
        assert!(second.observed_time_unix_nano > 0, "stamped when added");
        assert!(second.trace_id.is_empty() && second.attributes.is_empty());
    }

    /// The writer's bytes are prost's for the same `LogRecord`, attribute lengths around the
    /// one-byte varint limits included, and fields encoded beforehand are the same bytes.
    #[test]
    fn records_are_written_as_prost_writes_them() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as Kv};
        use opentelemetry_proto::tonic::logs::v1::LogRecord;
        let kv = |k: &str, v: Value| Kv {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Kv::default()
        };
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_765_000_000_123_456_789);
        for n in [
            0, 1, 60, 61, 62, 63, 120, 121, 122, 123, 124, 125, 126, 127, 128, 300,
        ] {
            let key = "k".repeat(n % 70 + 1);
            let val = "v".repeat(n);
            let fixed = LogFields::encode(|r| {
                r.severity(Severity::Warn).event_name("auth.request");
            });
            let mut batch = LogBatch::default();
            batch.push(|r| {
                r.observed_time(t)
                    .time(t)
                    .fields(&fixed)
                    .attr(&key, val.as_str())
                    .attr("short", "x")
                    .attr(&val, -1_i64)
                    .attr("f", 0.5)
                    .attr("b", false);
            });
            let want = LogRecord {
                time_unix_nano: nanos(t),
                observed_time_unix_nano: nanos(t),
                severity_number: 13,
                severity_text: "WARN".into(),
                event_name: "auth.request".into(),
                attributes: vec![
                    kv(&key, Value::StringValue(val.clone())),
                    kv("short", Value::StringValue("x".into())),
                    kv(&val, Value::IntValue(-1)),
                    kv("f", Value::DoubleValue(0.5)),
                    kv("b", Value::BoolValue(false)),
                ],
                ..LogRecord::default()
            };
            // One record: field 2 of `ScopeLogs`, its length, the message.
            let mut b = &batch.encoded()[1..];
            let len = prost::encoding::decode_varint(&mut b).unwrap();
            assert_eq!(len as usize, b.len());
            let got = LogRecord::decode(b).expect("decodes");
            assert_eq!(got, want, "{n}");
            // (prost leaves an empty key out, as proto3 allows; the writer keeps it.)
            for a in want.attributes.iter().filter(|a| !a.key.is_empty()) {
                let mut one = Vec::new();
                prost::encoding::message::encode(6, a, &mut one);
                assert!(
                    batch
                        .encoded()
                        .windows(one.len())
                        .any(|w| w == one.as_slice()),
                    "attribute {:?} as prost writes it",
                    a.key
                );
            }
        }
    }

    #[test]
    fn an_empty_resource_and_a_bare_scope_still_frame_a_valid_request() {
        let frame = RequestFrame::new(
            &opentelemetry_sdk::Resource::builder_empty().build(),
            &opentelemetry::InstrumentationScope::builder("s").build(),
        );
        let mut batch = LogBatch::default();
        let mut out = Vec::new();
        frame.write(&batch, &mut out);
        let req = ExportLogsServiceRequest::decode(out.as_slice()).unwrap();
        assert!(req.resource_logs[0].scope_logs[0].log_records.is_empty());
        // Cleared batches keep their buffer and encode nothing of the old records.
        batch.push(|r| {
            r.body("x");
        });
        let cap = batch.capacity();
        batch.clear();
        assert!(batch.is_empty() && batch.capacity() == cap);
        out.clear();
        frame.write(&batch, &mut out);
        let req = ExportLogsServiceRequest::decode(out.as_slice()).unwrap();
        assert!(req.resource_logs[0].scope_logs[0].log_records.is_empty());
    }

    #[test]
    fn a_batch_is_full_at_the_record_or_byte_limit() {
        let mut batch = LogBatch::default();
        for _ in 0..MAX_EXPORT_BATCH - 1 {
            batch.push(|r| {
                r.body("x");
            });
        }
        assert!(!batch.is_full());
        batch.push(|r| {
            r.body("x");
        });
        assert!(batch.is_full());
        let big = "x".repeat(MAX_BATCH_BYTES);
        let mut batch = LogBatch::default();
        batch.push(|r| {
            r.body(&big);
        });
        assert!(batch.is_full());
        let mut batch = LogBatch::with_max_records(3);
        for _ in 0..2 {
            batch.push(|r| {
                r.body("x");
            });
        }
        assert!(!batch.is_full());
        batch.push(|r| {
            r.body("x");
        });
        assert!(batch.is_full());
        batch.clear();
        assert!(
            !batch.is_full(),
            "a cleared batch keeps its limit, not its records"
        );
        assert!(LogBatch::with_max_records(0).is_empty());
        let mut one = LogBatch::with_max_records(0);
        one.push(|r| {
            r.body("x");
        });
        assert!(one.is_full(), "a limit of 0 is read as 1");
    }
}
