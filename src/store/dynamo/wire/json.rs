//! DynamoDB's JSON 1.0 protocol for the six operations [`Wire`](super::Wire) sends: the
//! SDK's input builders to request bodies, response bodies to the SDK's outputs, and error
//! bodies to the SDK's operation errors.
//!
//! Rule: an input field this module does not write is refused (never silently dropped),
//! so a call site that starts using one fails its tests instead of sending a different
//! request than it built.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use aws_sdk_dynamodb::operation::scan::{ScanError, ScanOutput};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};
use aws_smithy_types::error::ErrorMetadata;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// An item as the SDK holds it.
type Item = HashMap<String, AttributeValue>;

/// A body this module cannot write or read.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB JSON: {0}")]
pub(crate) struct CodecError(String);

fn codec(message: impl Into<String>) -> CodecError {
    CodecError(message.into())
}

/// One DynamoDB operation as the lean client sends it.
pub(crate) trait Operation {
    /// The `X-Amz-Target` header naming the operation.
    const TARGET: &'static str;
    /// The SDK's output type.
    type Output;
    /// The SDK's error type.
    type Error: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static;
    /// The request body.
    fn body(&self) -> Result<Vec<u8>, CodecError>;
    /// The output a 2xx response's body holds.
    fn output(body: &[u8]) -> Result<Self::Output, CodecError>;
    /// The error a service error response means; `item` is the one a failed condition
    /// hands back.
    fn error(meta: ErrorMetadata, item: Option<Item>) -> Self::Error;
}

/// The error of a non-2xx response: its `__type` and message, the item a failed condition
/// returned. A 5xx without a code is the service being busy, as the SDK reads it.
pub(super) fn service_error<O: Operation>(status: u16, body: &[u8]) -> O::Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (kind, message, item) = match parsed {
        Some(body) => (body.kind, body.message.or(body.upper_message), body.item),
        None => (None, None, None),
    };
    let code = kind
        .as_deref()
        .map(|kind| kind.rsplit_once('#').map_or(kind, |(_, code)| code))
        .or(match status {
            503 => Some("ServiceUnavailable"),
            500..=599 => Some("InternalServerError"),
            _ => None,
        });
    let mut meta = ErrorMetadata::builder();
    if let Some(code) = code {
        meta = meta.code(code);
    }
    if let Some(message) = message {
        meta = meta.message(message);
    }
    O::error(meta.build(), item.map(|item| item.0))
}

/// A failed condition's error as the SDK builds it, or the generic error of `meta`.
macro_rules! error_with_condition {
    ($error:ident, $meta:expr, $item:expr) => {{
        let meta: ErrorMetadata = $meta;
        if meta.code() == Some("ConditionalCheckFailedException") {
            let mut failed = ConditionalCheckFailedException::builder()
                .set_item($item)
                .meta(meta.clone());
            if let Some(message) = meta.message() {
                failed = failed.message(message);
            }
            $error::ConditionalCheckFailedException(failed.build())
        } else {
            $error::generic(meta)
        }
    }};
}

/// The fields `PutItem`, `UpdateItem` and `DeleteItem` share (their inputs name the getters
/// alike): the condition, its names and values, and what to return; the legacy forms of a
/// condition are refused.
macro_rules! conditional_write {
    ($body:ident, $input:ident) => {{
        $body.text("ConditionExpression", $input.get_condition_expression());
        $body.names($input.get_expression_attribute_names());
        $body.item(
            "ExpressionAttributeValues",
            $input.get_expression_attribute_values(),
        );
        $body.choice(
            "ReturnValues",
            $input.get_return_values().as_ref().map(ReturnValue::as_str),
        );
        $body.choice(
            "ReturnValuesOnConditionCheckFailure",
            $input
                .get_return_values_on_condition_check_failure()
                .as_ref()
                .map(ReturnValuesOnConditionCheckFailure::as_str),
        );
        $body.refuse("Expected", $input.get_expected().is_some())?;
        $body.refuse(
            "ConditionalOperator",
            $input.get_conditional_operator().is_some(),
        )?;
        $body.refuse(
            "ReturnConsumedCapacity",
            $input.get_return_consumed_capacity().is_some(),
        )?;
        $body.refuse(
            "ReturnItemCollectionMetrics",
            $input.get_return_item_collection_metrics().is_some(),
        )?;
    }};
}

impl Operation for PutItemFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.PutItem";
    type Output = PutItemOutput;
    type Error = PutItemError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.item("Item", input.get_item());
        conditional_write!(body, input);
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        Ok(PutItemOutput::builder()
            .set_attributes(Response::attributes(body)?)
            .build())
    }

    fn error(meta: ErrorMetadata, item: Option<Item>) -> Self::Error {
        error_with_condition!(PutItemError, meta, item)
    }
}

impl Operation for UpdateItemFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.UpdateItem";
    type Output = UpdateItemOutput;
    type Error = UpdateItemError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.item("Key", input.get_key());
        body.text("UpdateExpression", input.get_update_expression());
        conditional_write!(body, input);
        body.refuse("AttributeUpdates", input.get_attribute_updates().is_some())?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        Ok(UpdateItemOutput::builder()
            .set_attributes(Response::attributes(body)?)
            .build())
    }

    fn error(meta: ErrorMetadata, item: Option<Item>) -> Self::Error {
        error_with_condition!(UpdateItemError, meta, item)
    }
}

impl Operation for DeleteItemFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.DeleteItem";
    type Output = DeleteItemOutput;
    type Error = DeleteItemError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.item("Key", input.get_key());
        conditional_write!(body, input);
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        Ok(DeleteItemOutput::builder()
            .set_attributes(Response::attributes(body)?)
            .build())
    }

    fn error(meta: ErrorMetadata, item: Option<Item>) -> Self::Error {
        error_with_condition!(DeleteItemError, meta, item)
    }
}

impl Operation for GetItemFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.GetItem";
    type Output = GetItemOutput;
    type Error = GetItemError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.item("Key", input.get_key());
        body.flag("ConsistentRead", input.get_consistent_read());
        body.text("ProjectionExpression", input.get_projection_expression());
        body.names(input.get_expression_attribute_names());
        body.refuse("AttributesToGet", input.get_attributes_to_get().is_some())?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        Ok(GetItemOutput::builder()
            .set_item(Response::read(body)?.item.map(|item| item.0))
            .build())
    }

    fn error(meta: ErrorMetadata, _item: Option<Item>) -> Self::Error {
        GetItemError::generic(meta)
    }
}

/// The fields `Query` and `Scan` share (their inputs name the getters alike): the table or
/// index, the filter and projection with their names and values, where to start, how many,
/// and how consistently; the legacy forms are refused.
macro_rules! paged_read {
    ($body:ident, $input:ident) => {{
        $body.text("TableName", $input.get_table_name());
        $body.text("IndexName", $input.get_index_name());
        $body.text("FilterExpression", $input.get_filter_expression());
        $body.text("ProjectionExpression", $input.get_projection_expression());
        $body.names($input.get_expression_attribute_names());
        $body.item(
            "ExpressionAttributeValues",
            $input.get_expression_attribute_values(),
        );
        $body.item("ExclusiveStartKey", $input.get_exclusive_start_key());
        $body.flag("ConsistentRead", $input.get_consistent_read());
        $body.number("Limit", $input.get_limit());
        $body.choice("Select", $input.get_select().as_ref().map(Select::as_str));
        $body.refuse("AttributesToGet", $input.get_attributes_to_get().is_some())?;
        $body.refuse(
            "ConditionalOperator",
            $input.get_conditional_operator().is_some(),
        )?;
        $body.refuse(
            "ReturnConsumedCapacity",
            $input.get_return_consumed_capacity().is_some(),
        )?;
    }};
}

/// A `Query` or `Scan` output (`$output`) from a response body.
macro_rules! paged_output {
    ($output:ident, $body:ident) => {{
        let page = Page::read($body)?;
        Ok($output::builder()
            .set_items(page.items)
            .count(page.count)
            .scanned_count(page.scanned_count)
            .set_last_evaluated_key(page.last_evaluated_key)
            .build())
    }};
}

impl Operation for QueryFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.Query";
    type Output = QueryOutput;
    type Error = QueryError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text(
            "KeyConditionExpression",
            input.get_key_condition_expression(),
        );
        body.flag("ScanIndexForward", input.get_scan_index_forward());
        body.refuse("KeyConditions", input.get_key_conditions().is_some())?;
        body.refuse("QueryFilter", input.get_query_filter().is_some())?;
        paged_read!(body, input);
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        paged_output!(QueryOutput, body)
    }

    fn error(meta: ErrorMetadata, _item: Option<Item>) -> Self::Error {
        QueryError::generic(meta)
    }
}

impl Operation for ScanFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.Scan";
    type Output = ScanOutput;
    type Error = ScanError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.number("Segment", input.get_segment());
        body.number("TotalSegments", input.get_total_segments());
        body.refuse("ScanFilter", input.get_scan_filter().is_some())?;
        paged_read!(body, input);
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        paged_output!(ScanOutput, body)
    }

    fn error(meta: ErrorMetadata, _item: Option<Item>) -> Self::Error {
        ScanError::generic(meta)
    }
}

/// What a `Query` or `Scan` response holds.
struct Page {
    items: Option<Vec<Item>>,
    count: i32,
    scanned_count: i32,
    last_evaluated_key: Option<Item>,
}

impl Page {
    fn read(body: &[u8]) -> Result<Self, CodecError> {
        let response = Response::read(body)?;
        Ok(Self {
            items: response
                .items
                .map(|items| items.into_iter().map(|item| item.0).collect()),
            count: response.count,
            scanned_count: response.scanned_count,
            last_evaluated_key: response.last_evaluated_key.map(|item| item.0),
        })
    }
}

/// Every field of the six operations' responses this client reads; the rest (consumed
/// capacity, item collection metrics) is skipped.
#[derive(Deserialize)]
struct Response {
    #[serde(rename = "Attributes")]
    attributes: Option<ItemOut>,
    #[serde(rename = "Item")]
    item: Option<ItemOut>,
    #[serde(rename = "Items")]
    items: Option<Vec<ItemOut>>,
    #[serde(rename = "Count", default)]
    count: i32,
    #[serde(rename = "ScannedCount", default)]
    scanned_count: i32,
    #[serde(rename = "LastEvaluatedKey")]
    last_evaluated_key: Option<ItemOut>,
}

impl Response {
    /// A 2xx response's body (an empty body reads as an empty object).
    fn read(body: &[u8]) -> Result<Self, CodecError> {
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}".as_slice()
        } else {
            body
        };
        serde_json::from_slice(body).map_err(|err| codec(format!("response body: {err}")))
    }

    fn attributes(body: &[u8]) -> Result<Option<Item>, CodecError> {
        Ok(Self::read(body)?.attributes.map(|item| item.0))
    }
}

/// An error response's body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    upper_message: Option<String>,
    #[serde(rename = "Item")]
    item: Option<ItemOut>,
}

/// A request body being written: its fields, borrowed from the input.
#[derive(Default)]
struct Body<'a>(Vec<(&'static str, Field<'a>)>);

/// One field of a request body.
enum Field<'a> {
    Text(&'a str),
    Flag(bool),
    Number(i32),
    Names(&'a HashMap<String, String>),
    Item(&'a Item),
}

impl<'a> Body<'a> {
    fn text(&mut self, name: &'static str, value: &'a Option<String>) {
        if let Some(value) = value {
            self.0.push((name, Field::Text(value)));
        }
    }

    fn choice(&mut self, name: &'static str, value: Option<&'a str>) {
        if let Some(value) = value {
            self.0.push((name, Field::Text(value)));
        }
    }

    fn flag(&mut self, name: &'static str, value: &Option<bool>) {
        if let Some(value) = value {
            self.0.push((name, Field::Flag(*value)));
        }
    }

    fn number(&mut self, name: &'static str, value: &Option<i32>) {
        if let Some(value) = value {
            self.0.push((name, Field::Number(*value)));
        }
    }

    fn names(&mut self, names: &'a Option<HashMap<String, String>>) {
        if let Some(names) = names {
            self.0
                .push(("ExpressionAttributeNames", Field::Names(names)));
        }
    }

    fn item(&mut self, name: &'static str, item: &'a Option<Item>) {
        if let Some(item) = item {
            self.0.push((name, Field::Item(item)));
        }
    }

    fn refuse(&self, name: &str, set: bool) -> Result<(), CodecError> {
        if set {
            return Err(codec(format!("{name} is not supported by the lean client")));
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(&self).map_err(|err| codec(err.to_string()))
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, field)| (name, field)))
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Flag(flag) => serializer.serialize_bool(*flag),
            Self::Number(number) => serializer.serialize_i32(*number),
            Self::Names(names) => names.serialize(serializer),
            Self::Item(item) => ItemRef(item).serialize(serializer),
        }
    }
}

/// An item written in DynamoDB's JSON.
struct ItemRef<'a>(&'a Item);

impl Serialize for ItemRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, AttrRef(value))))
    }
}

/// An attribute value written in DynamoDB's JSON: a one-field object, blobs in base64.
struct AttrRef<'a>(&'a AttributeValue);

impl Serialize for AttrRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Blobs<'a>(&'a [Blob]);
        impl Serialize for Blobs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|blob| BASE64.encode(blob.as_ref())))
            }
        }
        struct List<'a>(&'a [AttributeValue]);
        impl Serialize for List<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(AttrRef))
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::S(text) => map.serialize_entry("S", text)?,
            AttributeValue::N(number) => map.serialize_entry("N", number)?,
            AttributeValue::B(blob) => map.serialize_entry("B", &BASE64.encode(blob.as_ref()))?,
            AttributeValue::Bool(flag) => map.serialize_entry("BOOL", flag)?,
            AttributeValue::Null(flag) => map.serialize_entry("NULL", flag)?,
            AttributeValue::Ss(texts) => map.serialize_entry("SS", texts)?,
            AttributeValue::Ns(numbers) => map.serialize_entry("NS", numbers)?,
            AttributeValue::Bs(blobs) => map.serialize_entry("BS", &Blobs(blobs))?,
            AttributeValue::L(values) => map.serialize_entry("L", &List(values))?,
            AttributeValue::M(item) => map.serialize_entry("M", &ItemRef(item))?,
            _ => {
                return Err(serde::ser::Error::custom(
                    "an attribute value of a kind this build does not know",
                ));
            }
        }
        map.end()
    }
}

/// An item read from DynamoDB's JSON, straight into the SDK's form.
struct ItemOut(Item);

impl<'de> Deserialize<'de> for ItemOut {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ItemOut;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an item (an object of attribute values)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemOut, A::Error> {
                let mut item = Item::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((name, value)) = map.next_entry::<String, AttrOut>()? {
                    item.insert(name, value.0);
                }
                Ok(ItemOut(item))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An attribute value read from DynamoDB's JSON.
struct AttrOut(AttributeValue);

/// The type tag of an attribute value.
#[derive(Deserialize)]
enum Kind {
    S,
    N,
    B,
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "NULL")]
    Null,
    #[serde(rename = "SS")]
    Ss,
    #[serde(rename = "NS")]
    Ns,
    #[serde(rename = "BS")]
    Bs,
    L,
    M,
}

impl<'de> Deserialize<'de> for AttrOut {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Tagged;
        impl<'de> Visitor<'de> for Tagged {
            type Value = AttrOut;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute value (an object of one field)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttrOut, A::Error> {
                let blob = |text: String| {
                    BASE64
                        .decode(text)
                        .map(Blob::new)
                        .map_err(serde::de::Error::custom)
                };
                let Some(kind) = map.next_key::<Kind>()? else {
                    return Err(serde::de::Error::custom("an attribute value with no field"));
                };
                let value = match kind {
                    Kind::S => AttributeValue::S(map.next_value()?),
                    Kind::N => AttributeValue::N(map.next_value()?),
                    Kind::B => AttributeValue::B(blob(map.next_value()?)?),
                    Kind::Bool => AttributeValue::Bool(map.next_value()?),
                    Kind::Null => AttributeValue::Null(map.next_value()?),
                    Kind::Ss => AttributeValue::Ss(map.next_value()?),
                    Kind::Ns => AttributeValue::Ns(map.next_value()?),
                    Kind::Bs => AttributeValue::Bs(
                        map.next_value::<Vec<String>>()?
                            .into_iter()
                            .map(blob)
                            .collect::<Result<_, _>>()?,
                    ),
                    Kind::L => AttributeValue::L(
                        map.next_value::<Vec<AttrOut>>()?
                            .into_iter()
                            .map(|value| value.0)
                            .collect(),
                    ),
                    Kind::M => AttributeValue::M(map.next_value::<ItemOut>()?.0),
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "an attribute value with more than one field",
                    ));
                }
                Ok(AttrOut(value))
            }
        }
        deserializer.deserialize_map(Tagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Item {
        HashMap::from([
            ("s".to_owned(), AttributeValue::S("a \"quoted\" é".into())),
            ("n".to_owned(), AttributeValue::N("-12.5".into())),
            (
                "b".to_owned(),
                AttributeValue::B(Blob::new(vec![0, 1, 255])),
            ),
            ("t".to_owned(), AttributeValue::Bool(true)),
            ("z".to_owned(), AttributeValue::Null(true)),
            (
                "ss".to_owned(),
                AttributeValue::Ss(vec!["x".into(), "y".into()]),
            ),
            (
                "ns".to_owned(),
                AttributeValue::Ns(vec!["1".into(), "2".into()]),
            ),
            (
                "bs".to_owned(),
                AttributeValue::Bs(vec![Blob::new(vec![7])]),
            ),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::S("in".into())]),
            ),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([(
                    "k".to_owned(),
                    AttributeValue::N("1".into()),
                )])),
            ),
        ])
    }

    #[test]
    fn every_attribute_kind_survives_a_round_trip() {
        let item = every_kind();
        let written = serde_json::to_value(ItemRef(&item)).unwrap();
        let read: ItemOut = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(read.0, item);
        // The wire form is DynamoDB's: a one-field object per value, blobs in base64.
        assert_eq!(written["b"], serde_json::json!({"B": "AAH/"}));
        assert_eq!(written["ss"], serde_json::json!({"SS": ["x", "y"]}));
    }

    #[test]
    fn a_malformed_value_is_refused() {
        for bad in [
            serde_json::json!({"S": 1}),
            serde_json::json!({"S": "a", "N": "1"}),
            serde_json::json!({"X": "a"}),
            serde_json::json!("S"),
            serde_json::json!({"B": "not base64!"}),
        ] {
            assert!(
                serde_json::from_value::<AttrOut>(bad.clone()).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn a_failed_condition_is_the_sdk_error_with_the_item() {
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{"PK":{"S":"SBX#1"}}}"#;
        let err = service_error::<UpdateItemFluentBuilder>(400, body);
        assert_eq!(err.code(), Some("ConditionalCheckFailedException"));
        assert_eq!(err.message(), Some("The conditional request failed"));
        let UpdateItemError::ConditionalCheckFailedException(failed) = err else {
            panic!("not a failed condition: {err:?}");
        };
        assert_eq!(
            failed.item().and_then(|item| item.get("PK")),
            Some(&AttributeValue::S("SBX#1".into()))
        );
    }

    #[test]
    fn throttling_and_bare_5xx_answers_keep_their_codes() {
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","Message":"slow down"}"#;
        let err = service_error::<PutItemFluentBuilder>(400, body);
        assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
        assert_eq!(err.message(), Some("slow down"));
        let err = service_error::<QueryFluentBuilder>(500, b"<html>oops</html>");
        assert_eq!(err.code(), Some("InternalServerError"));
        let err = service_error::<GetItemFluentBuilder>(503, b"");
        assert_eq!(err.code(), Some("ServiceUnavailable"));
        let err = service_error::<DeleteItemFluentBuilder>(400, b"{}");
        assert_eq!(err.code(), None);
    }

    #[test]
    fn a_query_output_reads_items_counts_and_the_cursor() {
        let body = br#"{"Count":2,"ScannedCount":3,"Items":[{"PK":{"S":"a"}},{"PK":{"S":"b"}}],"LastEvaluatedKey":{"PK":{"S":"b"}}}"#;
        let output = QueryFluentBuilder::output(body).unwrap();
        assert_eq!(output.count(), 2);
        assert_eq!(output.scanned_count(), 3);
        assert_eq!(output.items().len(), 2);
        assert!(output.last_evaluated_key().is_some());
        let empty = GetItemFluentBuilder::output(b"{}").unwrap();
        assert!(empty.item().is_none());
    }
}
