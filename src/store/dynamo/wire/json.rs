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
use serde_json::{Map, Value};

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
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|fields| fields.get(name))
            .and_then(Value::as_str)
    };
    let code = field("__type")
        .map(|kind| kind.rsplit_once('#').map_or(kind, |(_, code)| code))
        .or(match status {
            503 => Some("ServiceUnavailable"),
            500..=599 => Some("InternalServerError"),
            _ => None,
        });
    let message = field("message").or_else(|| field("Message"));
    let mut meta = ErrorMetadata::builder();
    if let Some(code) = code {
        meta = meta.code(code);
    }
    if let Some(message) = message {
        meta = meta.message(message);
    }
    let item = parsed
        .as_ref()
        .and_then(|fields| fields.get("Item"))
        .and_then(|item| read_item(item).ok());
    O::error(meta.build(), item)
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

impl Operation for PutItemFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.PutItem";
    type Output = PutItemOutput;
    type Error = PutItemError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.item("Item", input.get_item())?;
        body.text("ConditionExpression", input.get_condition_expression());
        body.names(input.get_expression_attribute_names());
        body.item(
            "ExpressionAttributeValues",
            input.get_expression_attribute_values(),
        )?;
        body.choice(
            "ReturnValues",
            input.get_return_values().as_ref().map(ReturnValue::as_str),
        );
        body.choice(
            "ReturnValuesOnConditionCheckFailure",
            input
                .get_return_values_on_condition_check_failure()
                .as_ref()
                .map(ReturnValuesOnConditionCheckFailure::as_str),
        );
        body.refuse("Expected", input.get_expected().is_some())?;
        body.refuse(
            "ConditionalOperator",
            input.get_conditional_operator().is_some(),
        )?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.refuse(
            "ReturnItemCollectionMetrics",
            input.get_return_item_collection_metrics().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        let fields = response(body)?;
        Ok(PutItemOutput::builder()
            .set_attributes(optional_item(&fields, "Attributes")?)
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
        body.item("Key", input.get_key())?;
        body.text("UpdateExpression", input.get_update_expression());
        body.text("ConditionExpression", input.get_condition_expression());
        body.names(input.get_expression_attribute_names());
        body.item(
            "ExpressionAttributeValues",
            input.get_expression_attribute_values(),
        )?;
        body.choice(
            "ReturnValues",
            input.get_return_values().as_ref().map(ReturnValue::as_str),
        );
        body.choice(
            "ReturnValuesOnConditionCheckFailure",
            input
                .get_return_values_on_condition_check_failure()
                .as_ref()
                .map(ReturnValuesOnConditionCheckFailure::as_str),
        );
        body.refuse("AttributeUpdates", input.get_attribute_updates().is_some())?;
        body.refuse("Expected", input.get_expected().is_some())?;
        body.refuse(
            "ConditionalOperator",
            input.get_conditional_operator().is_some(),
        )?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.refuse(
            "ReturnItemCollectionMetrics",
            input.get_return_item_collection_metrics().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        let fields = response(body)?;
        Ok(UpdateItemOutput::builder()
            .set_attributes(optional_item(&fields, "Attributes")?)
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
        body.item("Key", input.get_key())?;
        body.text("ConditionExpression", input.get_condition_expression());
        body.names(input.get_expression_attribute_names());
        body.item(
            "ExpressionAttributeValues",
            input.get_expression_attribute_values(),
        )?;
        body.choice(
            "ReturnValues",
            input.get_return_values().as_ref().map(ReturnValue::as_str),
        );
        body.choice(
            "ReturnValuesOnConditionCheckFailure",
            input
                .get_return_values_on_condition_check_failure()
                .as_ref()
                .map(ReturnValuesOnConditionCheckFailure::as_str),
        );
        body.refuse("Expected", input.get_expected().is_some())?;
        body.refuse(
            "ConditionalOperator",
            input.get_conditional_operator().is_some(),
        )?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.refuse(
            "ReturnItemCollectionMetrics",
            input.get_return_item_collection_metrics().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        let fields = response(body)?;
        Ok(DeleteItemOutput::builder()
            .set_attributes(optional_item(&fields, "Attributes")?)
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
        body.item("Key", input.get_key())?;
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
        let fields = response(body)?;
        Ok(GetItemOutput::builder()
            .set_item(optional_item(&fields, "Item")?)
            .build())
    }

    fn error(meta: ErrorMetadata, _item: Option<Item>) -> Self::Error {
        GetItemError::generic(meta)
    }
}

impl Operation for QueryFluentBuilder {
    const TARGET: &'static str = "DynamoDB_20120810.Query";
    type Output = QueryOutput;
    type Error = QueryError;

    fn body(&self) -> Result<Vec<u8>, CodecError> {
        let input = self.as_input();
        let mut body = Body::default();
        body.text("TableName", input.get_table_name());
        body.text("IndexName", input.get_index_name());
        body.text(
            "KeyConditionExpression",
            input.get_key_condition_expression(),
        );
        body.text("FilterExpression", input.get_filter_expression());
        body.text("ProjectionExpression", input.get_projection_expression());
        body.names(input.get_expression_attribute_names());
        body.item(
            "ExpressionAttributeValues",
            input.get_expression_attribute_values(),
        )?;
        body.item("ExclusiveStartKey", input.get_exclusive_start_key())?;
        body.flag("ConsistentRead", input.get_consistent_read());
        body.flag("ScanIndexForward", input.get_scan_index_forward());
        body.number("Limit", input.get_limit());
        body.choice("Select", input.get_select().as_ref().map(Select::as_str));
        body.refuse("AttributesToGet", input.get_attributes_to_get().is_some())?;
        body.refuse("KeyConditions", input.get_key_conditions().is_some())?;
        body.refuse("QueryFilter", input.get_query_filter().is_some())?;
        body.refuse(
            "ConditionalOperator",
            input.get_conditional_operator().is_some(),
        )?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        let page = Page::read(body)?;
        Ok(QueryOutput::builder()
            .set_items(page.items)
            .count(page.count)
            .scanned_count(page.scanned_count)
            .set_last_evaluated_key(page.last_evaluated_key)
            .build())
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
        body.text("TableName", input.get_table_name());
        body.text("IndexName", input.get_index_name());
        body.text("FilterExpression", input.get_filter_expression());
        body.text("ProjectionExpression", input.get_projection_expression());
        body.names(input.get_expression_attribute_names());
        body.item(
            "ExpressionAttributeValues",
            input.get_expression_attribute_values(),
        )?;
        body.item("ExclusiveStartKey", input.get_exclusive_start_key())?;
        body.flag("ConsistentRead", input.get_consistent_read());
        body.number("Limit", input.get_limit());
        body.number("Segment", input.get_segment());
        body.number("TotalSegments", input.get_total_segments());
        body.choice("Select", input.get_select().as_ref().map(Select::as_str));
        body.refuse("AttributesToGet", input.get_attributes_to_get().is_some())?;
        body.refuse("ScanFilter", input.get_scan_filter().is_some())?;
        body.refuse(
            "ConditionalOperator",
            input.get_conditional_operator().is_some(),
        )?;
        body.refuse(
            "ReturnConsumedCapacity",
            input.get_return_consumed_capacity().is_some(),
        )?;
        body.finish()
    }

    fn output(body: &[u8]) -> Result<Self::Output, CodecError> {
        let page = Page::read(body)?;
        Ok(ScanOutput::builder()
            .set_items(page.items)
            .count(page.count)
            .scanned_count(page.scanned_count)
            .set_last_evaluated_key(page.last_evaluated_key)
            .build())
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
        let fields = response(body)?;
        let items = match fields.get("Items") {
            None => None,
            Some(Value::Array(items)) => {
                Some(items.iter().map(read_item).collect::<Result<Vec<_>, _>>()?)
            }
            Some(_) => return Err(codec("Items is not a list")),
        };
        let count = |name: &str| -> Result<i32, CodecError> {
            match fields.get(name) {
                None => Ok(0),
                Some(value) => value
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| codec(format!("{name} is not a count"))),
            }
        };
        Ok(Self {
            items,
            count: count("Count")?,
            scanned_count: count("ScannedCount")?,
            last_evaluated_key: optional_item(&fields, "LastEvaluatedKey")?,
        })
    }
}

/// A request body being written.
#[derive(Default)]
struct Body(Map<String, Value>);

impl Body {
    fn text(&mut self, name: &str, value: &Option<String>) {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), Value::from(value.as_str()));
        }
    }

    fn flag(&mut self, name: &str, value: &Option<bool>) {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), Value::Bool(*value));
        }
    }

    fn choice(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), Value::from(value));
        }
    }

    fn number(&mut self, name: &str, value: &Option<i32>) {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), Value::from(*value));
        }
    }

    fn names(&mut self, names: &Option<HashMap<String, String>>) {
        if let Some(names) = names {
            let names = names
                .iter()
                .map(|(alias, name)| (alias.clone(), Value::from(name.as_str())))
                .collect();
            self.0
                .insert("ExpressionAttributeNames".into(), Value::Object(names));
        }
    }

    fn item(&mut self, name: &str, item: &Option<Item>) -> Result<(), CodecError> {
        if let Some(item) = item {
            self.0.insert(name.to_owned(), write_item(item)?);
        }
        Ok(())
    }

    fn refuse(&self, name: &str, set: bool) -> Result<(), CodecError> {
        if set {
            return Err(codec(format!("{name} is not supported by the lean client")));
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(&self.0).map_err(|err| codec(err.to_string()))
    }
}

fn write_item(item: &Item) -> Result<Value, CodecError> {
    item.iter()
        .map(|(name, value)| Ok((name.clone(), write_value(value)?)))
        .collect::<Result<Map<_, _>, _>>()
        .map(Value::Object)
}

fn write_value(value: &AttributeValue) -> Result<Value, CodecError> {
    let strings = |values: &[String]| values.iter().map(|v| Value::from(v.as_str())).collect();
    let blob = |blob: &Blob| Value::from(BASE64.encode(blob.as_ref()));
    let (kind, value) = match value {
        AttributeValue::S(text) => ("S", Value::from(text.as_str())),
        AttributeValue::N(number) => ("N", Value::from(number.as_str())),
        AttributeValue::B(bytes) => ("B", blob(bytes)),
        AttributeValue::Bool(flag) => ("BOOL", Value::Bool(*flag)),
        AttributeValue::Null(flag) => ("NULL", Value::Bool(*flag)),
        AttributeValue::Ss(texts) => ("SS", Value::Array(strings(texts))),
        AttributeValue::Ns(numbers) => ("NS", Value::Array(strings(numbers))),
        AttributeValue::Bs(blobs) => ("BS", Value::Array(blobs.iter().map(blob).collect())),
        AttributeValue::L(values) => (
            "L",
            Value::Array(values.iter().map(write_value).collect::<Result<_, _>>()?),
        ),
        AttributeValue::M(item) => ("M", write_item(item)?),
        _ => {
            return Err(codec(
                "an attribute value of a kind this build does not know",
            ));
        }
    };
    Ok(Value::Object(Map::from_iter([(kind.to_owned(), value)])))
}

/// A response body's fields (an empty body is an empty object, as DynamoDB may send).
fn response(body: &[u8]) -> Result<Map<String, Value>, CodecError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    serde_json::from_slice(body).map_err(|err| codec(format!("response body: {err}")))
}

fn optional_item(fields: &Map<String, Value>, name: &str) -> Result<Option<Item>, CodecError> {
    fields.get(name).map(read_item).transpose()
}

fn read_item(value: &Value) -> Result<Item, CodecError> {
    let Value::Object(fields) = value else {
        return Err(codec("an item is not an object"));
    };
    fields
        .iter()
        .map(|(name, value)| Ok((name.clone(), read_value(value)?)))
        .collect()
}

fn read_value(value: &Value) -> Result<AttributeValue, CodecError> {
    let mut fields = value.as_object().map(|fields| fields.iter());
    let (Some((kind, value)), None) = (
        fields.as_mut().and_then(Iterator::next),
        fields.as_mut().and_then(Iterator::next),
    ) else {
        return Err(codec("an attribute value is not an object of one field"));
    };
    let text = || {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| codec(format!("{kind} is not a string")))
    };
    let list = || {
        value
            .as_array()
            .ok_or_else(|| codec(format!("{kind} is not a list")))
    };
    let texts = || -> Result<Vec<String>, CodecError> {
        list()?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| codec(format!("{kind} holds a non-string")))
            })
            .collect()
    };
    let blob = |v: &Value| -> Result<Blob, CodecError> {
        let text = v
            .as_str()
            .ok_or_else(|| codec(format!("{kind} holds a non-string")))?;
        BASE64
            .decode(text)
            .map(Blob::new)
            .map_err(|err| codec(format!("{kind}: {err}")))
    };
    let flag = || {
        value
            .as_bool()
            .ok_or_else(|| codec(format!("{kind} is not a boolean")))
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(blob(value)?),
        "BOOL" => AttributeValue::Bool(flag()?),
        "NULL" => AttributeValue::Null(flag()?),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(list()?.iter().map(blob).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(list()?.iter().map(read_value).collect::<Result<_, _>>()?),
        "M" => AttributeValue::M(read_item(value)?),
        other => return Err(codec(format!("unknown attribute type {other}"))),
    })
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
        let written = write_item(&item).unwrap();
        assert_eq!(read_item(&written).unwrap(), item);
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
            assert!(read_value(&bad).is_err(), "{bad} was accepted");
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
