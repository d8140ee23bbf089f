//! JSON shapes of products (camelCase, as the frontend reads them) and the validation of
//! `ProductRequest` bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::pagination::Keyed;

use crate::error::ApiError;
use crate::limits::{self, check_length};

/// A catalog product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Category id.
    #[sqlx(rename = "category_id")]
    pub category: i64,
    /// Sub-category id (belongs to `category`).
    #[sqlx(rename = "sub_category_id")]
    pub sub_category: i64,
    pub image_url: String,
    /// Price in whole currency units.
    pub price: i64,
    pub previous_price: i64,
    pub offered: bool,
}

/// Body of product creation and update. Every value is optional at the JSON level so that a missing
/// key gets the same validation message as an empty one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductRequest {
    #[schema(required = true, value_type = String, max_length = 200)]
    pub name: Option<String>,
    #[schema(required = true, value_type = String, max_length = 5000)]
    pub description: Option<String>,
    #[schema(required = true, value_type = i64)]
    pub category: Option<i64>,
    #[schema(required = true, value_type = i64)]
    pub sub_category: Option<i64>,
    #[schema(required = true, value_type = String, max_length = 2048)]
    pub image_url: Option<String>,
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub price: Option<i64>,
    /// Defaults to `price`.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub previous_price: Option<i64>,
    /// Defaults to true.
    #[schema(value_type = Option<bool>)]
    pub offered: Option<bool>,
}

/// A product request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidProduct {
    pub name: String,
    pub description: String,
    pub category: i64,
    pub sub_category: i64,
    pub image_url: String,
    pub price: i64,
    pub previous_price: i64,
    pub offered: bool,
}

fn required_text(value: &Option<String>, message: &str) -> Result<String, ApiError> {
    match value {
        Some(text) if !text.trim().is_empty() => Ok(text.clone()),
        _ => Err(ApiError::invalid(message)),
    }
}

impl ProductRequest {
    /// The checks that come before the category checks, in the contract's order.
    pub fn validate_text(&self) -> Result<(), ApiError> {
        let name = required_text(&self.name, "product name is required")?;
        check_length(&name, "name", limits::MAX_PRODUCT_NAME_CHARS)?;
        let description = required_text(&self.description, "product description is required")?;
        check_length(
            &description,
            "description",
            limits::MAX_PRODUCT_DESCRIPTION_CHARS,
        )?;
        Ok(())
    }

    /// Category and sub-category ids as sent (0 when absent, which matches no row).
    pub fn category_ids(&self) -> (i64, i64) {
        (self.category.unwrap_or(0), self.sub_category.unwrap_or(0))
    }

    /// The checks after the category checks; returns the validated product.
    pub fn validate_rest(&self) -> Result<ValidProduct, ApiError> {
        self.validate_text()?;
        let name = required_text(&self.name, "product name is required")?;
        let description = required_text(&self.description, "product description is required")?;
        let image_url = required_text(&self.image_url, "product image URL is required")?;
        check_length(&image_url, "imageUrl", limits::MAX_IMAGE_URL_CHARS)?;
        let price = match self.price {
            Some(price) if price > 0 => price,
            _ => return Err(ApiError::invalid("product price must be greater than 0")),
        };
        let previous_price = match self.previous_price {
            Some(previous) if previous < 0 => {
                return Err(ApiError::invalid("previous price cannot be negative"));
            }
            Some(previous) => previous,
            None => price,
        };
        let (category, sub_category) = self.category_ids();
        Ok(ValidProduct {
            name,
            description,
            category,
            sub_category,
            image_url,
            price,
            previous_price,
            offered: self.offered.unwrap_or(true),
        })
    }
}

/// Escapes `%`, `_` and `\` so a search text matches literally inside an `ILIKE ... ESCAPE '\'`.
pub fn like_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A search query is valid when it has a non-space character and at most 100 characters.
pub fn validate_search(query: &str) -> Result<&str, ApiError> {
    let trimmed = query.trim();
    if trimmed.is_empty() || query.chars().count() > 100 {
        return Err(ApiError::invalid("invalid search query"));
    }
    Ok(trimmed)
}

impl Keyed for Product {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_request() -> ProductRequest {
        ProductRequest {
            name: Some("Mug".into()),
            description: Some("A mug".into()),
            category: Some(3),
            sub_category: Some(9),
            image_url: Some("https://example.com/m.png".into()),
            price: Some(10),
            previous_price: None,
            offered: None,
        }
    }

    #[test]
    fn previous_price_defaults_to_price_and_offered_to_true() {
        let product = valid_request().validate_rest().unwrap();
        assert_eq!(product.previous_price, 10);
        assert!(product.offered);
    }

    #[test]
    fn messages_in_contract_order() {
        let mut request = valid_request();
        request.name = Some("  ".into());
        request.price = Some(0);
        assert_eq!(
            request.validate_text().unwrap_err().to_string(),
            "product name is required"
        );
        let mut request = valid_request();
        request.image_url = None;
        request.price = Some(-1);
        assert_eq!(
            request.validate_rest().unwrap_err().to_string(),
            "product image URL is required"
        );
        let mut request = valid_request();
        request.previous_price = Some(-1);
        assert_eq!(
            request.validate_rest().unwrap_err().to_string(),
            "previous price cannot be negative"
        );
    }

    #[test]
    fn like_metacharacters_are_literal() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn search_query_bounds() {
        assert!(validate_search("   ").is_err());
        assert!(validate_search(&"a".repeat(101)).is_err());
        assert_eq!(validate_search(" mug ").unwrap(), "mug");
        assert!(validate_search(&"é".repeat(100)).is_ok());
    }
}
