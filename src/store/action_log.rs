//! Keys and page cursors of the admins' action log, shared by both stores so an entry's
//! order and a cursor's shape are decided once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::StoreError;
use crate::domain::actions::{AdminAction, action_key};

/// A new entry's key in the action log: its time, then the wall clock's nanoseconds and a
/// random suffix, so entries of one second keep the order they were written in and two
/// instances never collide.
pub fn new_action_key(action: &AdminAction) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let unique = uuid::Uuid::new_v4().simple().to_string();
    action_key(action, &format!("{nanos:024}{}", &unique[..8]))
}

/// The opaque cursor of an action-log page: the key of its last (oldest) entry.
pub fn encode_action_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("a1:{key}"))
}

/// The entry key an action-log cursor names; [`StoreError::InvalidCursor`] for anything
/// [`encode_action_cursor`] did not make.
pub fn decode_action_cursor(cursor: &str) -> Result<String, StoreError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let key = text.strip_prefix("a1:").ok_or(StoreError::InvalidCursor)?;
    let well_formed = key
        .split_once('#')
        .is_some_and(|(at, _)| at.len() == 12 && at.bytes().all(|b| b.is_ascii_digit()));
    well_formed
        .then(|| key.to_owned())
        .ok_or(StoreError::InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_cursors_round_trip_and_refuse_anything_else() {
        let key = "001800000000#abc";
        assert_eq!(
            decode_action_cursor(&encode_action_cursor(key)).unwrap(),
            key
        );
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("v1:x"),
            &encode_action_cursor("12#x"),
        ] {
            assert!(decode_action_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
