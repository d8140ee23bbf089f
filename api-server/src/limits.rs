//! Size limits of everything a client can store, in one place: text fields, rows per cart, items
//! per order, addresses per user, and the largest event payload the outbox accepts.
//!
//! Every stored value ends up in an outbox event (and so in a Kafka message), in cache entries and
//! in list responses; without bounds, one request could create an event the broker refuses and
//! rows that make every later event of that user too large. The maxima are documented in the
//! README ("Limits"); a value past one is 400 `invalid_argument` naming the field as the client
//! sent it.

use serde_json::json;

use crate::error::ApiError;

/// A user id (the identity provider's; Clerk's are ~32 characters), in bodies and paths.
pub const MAX_USER_ID_CHARS: usize = 128;
/// A first or last name.
pub const MAX_PERSON_NAME_CHARS: usize = 100;
/// An email address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// The street line of an address.
pub const MAX_STREET_CHARS: usize = 200;
/// City, state or country of an address.
pub const MAX_REGION_CHARS: usize = 100;
/// A zip or postal code.
pub const MAX_ZIP_CODE_CHARS: usize = 20;
/// A product name.
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
/// A product description.
pub const MAX_PRODUCT_DESCRIPTION_CHARS: usize = 5000;
/// A product image URL.
pub const MAX_IMAGE_URL_CHARS: usize = 2048;
/// An order status (`pending`, `succeeded`, `cancelled`, …).
pub const MAX_ORDER_STATUS_CHARS: usize = 64;

/// Rows of one user's cart.
pub const MAX_CART_ROWS: i64 = 200;
/// Items of one order.
pub const MAX_ORDER_ITEMS: i64 = 100;
/// Addresses of one user (a `user_deleted` event carries all of them).
pub const MAX_ADDRESSES_PER_USER: i64 = 50;

/// Largest outbox payload accepted at write time. The biggest event the limits above allow (a
/// user with 50 maximal addresses) is ≈ 40 KiB of plain text and ≈ 210 KiB if every character
/// needs a six-byte JSON escape; the producer's `message.max.bytes` is
/// [`crate::events::kafka::PRODUCER_MESSAGE_MAX_BYTES`], four times this.
pub const MAX_EVENT_PAYLOAD_BYTES: usize = 256 * 1024;

/// `field is too long, at most N characters` when `value` has more than `max` characters.
pub fn check_length(value: &str, field: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid_with(
            format!("{field} is too long, at most {max} characters"),
            json!({ "field": field, "max_characters": max }),
        ));
    }
    Ok(())
}

/// A user id from a path: the same bound as in bodies, checked before anything is read or cached.
pub fn check_path_user_id(user_id: &str) -> Result<(), ApiError> {
    check_length(user_id, "user_id", MAX_USER_ID_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_past_its_maximum_names_the_field() {
        assert!(check_length("abc", "city", 3).is_ok());
        assert!(
            check_length("ééé", "city", 3).is_ok(),
            "characters, not bytes"
        );
        let error = check_length("abcd", "city", 3).unwrap_err();
        assert_eq!(error.to_string(), "city is too long, at most 3 characters");
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_largest_allowed_user_event_fits_the_payload_limit() {
        let address = 7 * 10
            + 20
            + MAX_STREET_CHARS * 6
            + MAX_REGION_CHARS * 3 * 6
            + MAX_ZIP_CODE_CHARS * 6
            + MAX_USER_ID_CHARS * 6;
        let user = MAX_USER_ID_CHARS * 6 + MAX_PERSON_NAME_CHARS * 2 * 6 + MAX_EMAIL_CHARS * 6;
        let largest = 200 + user + MAX_ADDRESSES_PER_USER as usize * address;
        assert!(largest < MAX_EVENT_PAYLOAD_BYTES, "{largest}");
    }
}
