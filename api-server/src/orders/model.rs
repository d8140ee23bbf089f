//! JSON shapes of orders and order items (snake_case, as the frontend reads them) and their
//! validation. `created_at` is serialized as RFC 3339 UTC with microseconds, exactly as stored.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::http::pagination::Keyed;

use crate::error::ApiError;
use crate::limits::{self, check_length};

fn rfc3339_micros<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// An order. Money is a float for compatibility with the frontend (see the README).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Order {
    pub id: i64,
    pub user_id: String,
    pub address_id: i64,
    pub total_price: f64,
    /// Set by the server at creation; never changes.
    #[serde(serialize_with = "rfc3339_micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-25T14:03:07.123456Z")]
    pub created_at: DateTime<Utc>,
    pub status: String,
    /// Computed by the server, never taken from the client: the sum of quantity × catalog price
    /// of the order's items (catalog price unit), as of the last change to its items.
    /// `total_price` is what the payment provider charged, in cents.
    pub items_total: i64,
}

/// The status a storefront caller may move its order to; every other change of an existing
/// order needs the admin scope.
pub const CANCELLED: &str = "cancelled";

/// Whether a storefront caller may apply `change` to `stored`: only cancelling (or a body that
/// changes nothing). Address, `total_price` and any other status are the back office's.
pub fn storefront_may_apply(stored: &Order, change: &ValidOrder) -> bool {
    change.address_id == stored.address_id
        && change.total_price.to_bits() == stored.total_price.to_bits()
        && (change.status == stored.status || change.status == CANCELLED)
}

/// Whether the provider's amount (cents) differs from the server's item total (catalog units)
/// by a cent or more.
pub fn total_mismatch(total_price_cents: f64, items_total: i64) -> bool {
    (total_price_cents - items_total as f64 * 100.0).abs() >= 1.0
}

/// Body of order creation (`id` ignored) and update (`id` required). `created_at` is ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct OrderRequest {
    /// Required on update, ignored on creation.
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    #[schema(required = true, value_type = String, max_length = 128)]
    pub user_id: Option<String>,
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub address_id: Option<i64>,
    #[schema(required = true, value_type = f64, exclusive_minimum = 0)]
    pub total_price: Option<f64>,
    #[schema(required = true, value_type = String, max_length = 64)]
    pub status: Option<String>,
}

/// Order fields that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrder {
    pub user_id: String,
    pub address_id: i64,
    pub total_price: f64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct OrderItem {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
}

/// Body of order item creation (`id` ignored) and update (`id` required).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct OrderItemRequest {
    /// Required on update, ignored on creation.
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub order_id: Option<i64>,
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub product_id: Option<i64>,
    #[schema(required = true, value_type = i32, minimum = 1)]
    pub quantity: Option<i64>,
}

/// An item of `POST /orders/detailed/add`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DetailedOrderItemRequest {
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub product_id: Option<i64>,
    #[schema(required = true, value_type = i32, minimum = 1)]
    pub quantity: Option<i64>,
}

/// Body of `POST /orders/detailed/add`: an order and its items, written together.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DetailedOrderRequest {
    #[schema(required = true, value_type = OrderRequest)]
    pub order: Option<OrderRequest>,
    /// May be empty or absent (an order without items); at most 100.
    #[serde(default)]
    #[schema(value_type = Vec<DetailedOrderItemRequest>, max_items = 100)]
    pub items: Option<Vec<DetailedOrderItemRequest>>,
}

/// An order with its items (by id).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DetailedOrder {
    pub order: Order,
    pub items: Vec<OrderItem>,
}

/// A product line that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidLine {
    pub product_id: i64,
    pub quantity: i32,
}

fn positive_id(value: Option<i64>, message: &str) -> Result<i64, ApiError> {
    match value {
        Some(id) if id > 0 => Ok(id),
        _ => Err(ApiError::invalid(message)),
    }
}

fn line(product_id: Option<i64>, quantity: Option<i64>) -> Result<ValidLine, ApiError> {
    let product_id = positive_id(product_id, "product_id is required")?;
    let quantity = positive_id(quantity, "quantity is required")?;
    let quantity =
        i32::try_from(quantity).map_err(|_| ApiError::invalid("quantity is too large"))?;
    Ok(ValidLine {
        product_id,
        quantity,
    })
}

impl OrderRequest {
    /// The id of an update body: `id is required` unless positive.
    pub fn update_id(&self) -> Result<i64, ApiError> {
        positive_id(self.id, "id is required")
    }

    pub fn validate(&self) -> Result<ValidOrder, ApiError> {
        let user_id = match &self.user_id {
            Some(user_id) if !user_id.trim().is_empty() => user_id.clone(),
            _ => return Err(ApiError::invalid("user_id is required")),
        };
        check_length(&user_id, "user_id", limits::MAX_USER_ID_CHARS)?;
        let address_id = positive_id(self.address_id, "address_id is required")?;
        let total_price = match self.total_price {
            Some(price) if price.is_finite() && price > 0.0 => price,
            _ => return Err(ApiError::invalid("total_price is required")),
        };
        let status = match &self.status {
            Some(status) if !status.trim().is_empty() => status.clone(),
            _ => return Err(ApiError::invalid("status is required")),
        };
        check_length(&status, "status", limits::MAX_ORDER_STATUS_CHARS)?;
        Ok(ValidOrder {
            user_id,
            address_id,
            total_price,
            status,
        })
    }
}

impl OrderItemRequest {
    /// The id of an update body: `id is required` unless positive.
    pub fn update_id(&self) -> Result<i64, ApiError> {
        positive_id(self.id, "id is required")
    }

    /// Returns the order id and the line.
    pub fn validate(&self) -> Result<(i64, ValidLine), ApiError> {
        let order_id = positive_id(self.order_id, "order_id is required")?;
        Ok((order_id, line(self.product_id, self.quantity)?))
    }
}

impl DetailedOrderItemRequest {
    pub fn validate(&self) -> Result<ValidLine, ApiError> {
        line(self.product_id, self.quantity)
    }
}

impl DetailedOrderRequest {
    /// Static validation of the order and every item (`items[i]: ...`).
    pub fn validate(&self) -> Result<(ValidOrder, Vec<ValidLine>), ApiError> {
        let order = self
            .order
            .as_ref()
            .ok_or_else(|| ApiError::invalid("order is required"))?
            .validate()?;
        if self
            .items
            .as_ref()
            .is_some_and(|items| items.len() as i64 > limits::MAX_ORDER_ITEMS)
        {
            return Err(ApiError::invalid(format!(
                "too many order items, at most {}",
                limits::MAX_ORDER_ITEMS
            )));
        }
        let lines = self
            .items
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, item)| {
                item.validate()
                    .map_err(|e| e.prefixed(&format!("items[{index}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((order, lines))
    }
}

impl Keyed for Order {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

impl Keyed for OrderItem {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

impl Keyed for DetailedOrder {
    fn cursor_key(&self) -> String {
        self.order.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderRequest {
        OrderRequest {
            id: Some(1),
            user_id: Some("u".into()),
            address_id: Some(1),
            total_price: Some(9.5),
            status: Some("pending".into()),
        }
    }

    #[test]
    fn order_messages_in_order() {
        let message = |request: OrderRequest| request.validate().unwrap_err().to_string();
        assert_eq!(message(OrderRequest::default()), "user_id is required");
        assert_eq!(
            message(OrderRequest {
                address_id: Some(0),
                ..order()
            }),
            "address_id is required"
        );
        assert_eq!(
            message(OrderRequest {
                total_price: Some(0.0),
                ..order()
            }),
            "total_price is required"
        );
        assert_eq!(
            message(OrderRequest {
                total_price: Some(f64::NAN),
                ..order()
            }),
            "total_price is required"
        );
        assert_eq!(
            message(OrderRequest {
                total_price: Some(f64::INFINITY),
                ..order()
            }),
            "total_price is required"
        );
        assert_eq!(
            message(OrderRequest {
                status: Some(" ".into()),
                ..order()
            }),
            "status is required"
        );
        assert_eq!(
            OrderRequest {
                id: Some(0),
                ..order()
            }
            .update_id()
            .unwrap_err()
            .to_string(),
            "id is required"
        );
    }

    #[test]
    fn item_messages_in_order() {
        let message = |request: OrderItemRequest| request.validate().unwrap_err().to_string();
        assert_eq!(message(OrderItemRequest::default()), "order_id is required");
        let base = OrderItemRequest {
            id: None,
            order_id: Some(1),
            product_id: Some(2),
            quantity: Some(3),
        };
        assert_eq!(
            message(OrderItemRequest {
                product_id: Some(-1),
                ..base.clone()
            }),
            "product_id is required"
        );
        assert_eq!(
            message(OrderItemRequest {
                quantity: Some(0),
                ..base.clone()
            }),
            "quantity is required"
        );
        assert_eq!(
            message(OrderItemRequest {
                quantity: Some(1 << 40),
                ..base
            }),
            "quantity is too large"
        );
    }

    #[test]
    fn detailed_item_errors_carry_the_index() {
        let request = DetailedOrderRequest {
            order: Some(order()),
            items: Some(vec![
                DetailedOrderItemRequest {
                    product_id: Some(1),
                    quantity: Some(1),
                },
                DetailedOrderItemRequest {
                    product_id: Some(1),
                    quantity: Some(1),
                },
                DetailedOrderItemRequest {
                    product_id: Some(1),
                    quantity: None,
                },
            ]),
        };
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "items[2]: quantity is required"
        );
        let missing = DetailedOrderRequest {
            order: None,
            items: None,
        };
        assert_eq!(
            missing.validate().unwrap_err().to_string(),
            "order is required"
        );
        let empty = DetailedOrderRequest {
            order: Some(order()),
            items: None,
        };
        assert!(empty.validate().unwrap().1.is_empty());
    }

    #[test]
    fn a_storefront_caller_may_only_cancel() {
        let stored = Order {
            id: 1,
            user_id: "u".into(),
            address_id: 1,
            total_price: 9.5,
            created_at: Utc::now(),
            status: "succeeded".into(),
            items_total: 0,
        };
        let change = order().validate().unwrap();
        let with = |status: &str, total: f64, address: i64| ValidOrder {
            status: status.into(),
            total_price: total,
            address_id: address,
            ..change.clone()
        };
        assert!(storefront_may_apply(&stored, &with("cancelled", 9.5, 1)));
        assert!(storefront_may_apply(&stored, &with("succeeded", 9.5, 1)));
        assert!(!storefront_may_apply(&stored, &with("refunded", 9.5, 1)));
        assert!(!storefront_may_apply(&stored, &with("cancelled", 0.5, 1)));
        assert!(!storefront_may_apply(&stored, &with("cancelled", 9.5, 2)));
    }

    #[test]
    fn the_provider_amount_is_compared_in_cents() {
        assert!(!total_mismatch(6400.0, 64));
        assert!(!total_mismatch(6400.4, 64));
        assert!(total_mismatch(100.0, 64));
        assert!(total_mismatch(6300.0, 64));
    }

    #[test]
    fn created_at_has_microseconds_and_z() {
        let order = Order {
            id: 1,
            user_id: "u".into(),
            address_id: 1,
            total_price: 1.5,
            created_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00.5+02:00")
                .unwrap()
                .with_timezone(&Utc),
            status: "pending".into(),
            items_total: 0,
        };
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["created_at"], "2026-11-25T08:00:00.500000Z");
    }
}
