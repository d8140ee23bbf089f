//! JSON shapes of cart items (snake_case, as the frontend reads them) and their validation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::pagination::Keyed;

use crate::error::ApiError;
use crate::limits::{self, check_length};

/// Largest quantity of one cart row.
pub const MAX_QUANTITY: i64 = 1000;
/// Most items one `add/all` may carry.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct CartItem {
    pub id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub user_id: String,
}

/// Body of `POST /cart/add`, an element of `add/all`, and (with `id`) of `PUT /cart/update`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CartItemRequest {
    /// Required on update, ignored on creation.
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub product_id: Option<i64>,
    #[schema(required = true, value_type = i32, minimum = 1, maximum = 1000)]
    pub quantity: Option<i64>,
    #[schema(required = true, value_type = String, max_length = 128)]
    pub user_id: Option<String>,
}

/// Body of `POST /cart/add/all`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CartItemsRequest {
    #[schema(required = true, value_type = Vec<CartItemRequest>, max_items = 100)]
    pub data: Option<Vec<CartItemRequest>>,
}

/// A cart row to write, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCartItem {
    pub product_id: i64,
    pub quantity: i32,
    pub user_id: String,
}

impl CartItemRequest {
    /// The id of an update body: `invalid cart item ID` unless positive.
    pub fn update_id(&self) -> Result<i64, ApiError> {
        match self.id {
            Some(id) if id > 0 => Ok(id),
            _ => Err(ApiError::invalid("invalid cart item ID")),
        }
    }

    pub fn validate(&self) -> Result<ValidCartItem, ApiError> {
        let product_id = match self.product_id {
            Some(id) if id > 0 => id,
            _ => return Err(ApiError::invalid("invalid product ID")),
        };
        let quantity = match self.quantity {
            Some(quantity) if quantity >= 1 => quantity,
            _ => return Err(ApiError::invalid("invalid quantity, cannot be less than 1")),
        };
        let user_id = match &self.user_id {
            Some(user_id) if !user_id.trim().is_empty() => user_id.clone(),
            _ => return Err(ApiError::invalid("invalid user ID")),
        };
        check_length(&user_id, "user_id", limits::MAX_USER_ID_CHARS)?;
        let quantity = i32::try_from(quantity)
            .ok()
            .filter(|&q| i64::from(q) <= MAX_QUANTITY)
            .ok_or_else(|| ApiError::invalid("invalid quantity, cannot be more than 1000"))?;
        Ok(ValidCartItem {
            product_id,
            quantity,
            user_id,
        })
    }
}

impl CartItemsRequest {
    /// Validates the batch and each item, prefixing item errors with `data[i]`.
    pub fn validate(&self) -> Result<Vec<ValidCartItem>, ApiError> {
        let items = match &self.data {
            Some(items) if !items.is_empty() => items,
            _ => return Err(ApiError::invalid("empty new cart items list")),
        };
        if items.len() > MAX_BATCH {
            return Err(ApiError::invalid("too many cart items"));
        }
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.validate()
                    .map_err(|e| e.prefixed(&format!("data[{index}]")))
            })
            .collect()
    }
}

impl Keyed for CartItem {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(product_id: i64, quantity: i64, user_id: &str) -> CartItemRequest {
        CartItemRequest {
            id: None,
            product_id: Some(product_id),
            quantity: Some(quantity),
            user_id: Some(user_id.into()),
        }
    }

    #[test]
    fn messages_in_contract_order() {
        let message = |request: CartItemRequest| request.validate().unwrap_err().to_string();
        assert_eq!(message(item(0, 0, "")), "invalid product ID");
        assert_eq!(
            message(item(1, 0, "")),
            "invalid quantity, cannot be less than 1"
        );
        assert_eq!(message(item(1, 1001, "")), "invalid user ID");
        assert_eq!(
            message(item(1, 1001, "u")),
            "invalid quantity, cannot be more than 1000"
        );
        assert_eq!(
            message(item(1, i64::MAX, "u")),
            "invalid quantity, cannot be more than 1000"
        );
        assert_eq!(message(CartItemRequest::default()), "invalid product ID");
        assert_eq!(item(1, 1000, "u").validate().unwrap().quantity, 1000);
    }

    #[test]
    fn batch_rules() {
        let message = |request: CartItemsRequest| request.validate().unwrap_err().to_string();
        assert_eq!(
            message(CartItemsRequest { data: None }),
            "empty new cart items list"
        );
        assert_eq!(
            message(CartItemsRequest { data: Some(vec![]) }),
            "empty new cart items list"
        );
        let many = vec![item(1, 1, "u"); 101];
        assert_eq!(
            message(CartItemsRequest { data: Some(many) }),
            "too many cart items"
        );
        let mixed = vec![item(1, 1, "u"), item(1, 1, "u"), item(1, 0, "u")];
        assert_eq!(
            message(CartItemsRequest { data: Some(mixed) }),
            "data[2]: invalid quantity, cannot be less than 1"
        );
    }
}
