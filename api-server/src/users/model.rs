//! JSON shapes of users and addresses (camelCase, as the frontend reads them), their validation,
//! and their snake_case form inside `users_updates` events.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::http::pagination::Keyed;

use crate::error::ApiError;
use crate::limits::{self, check_length};

/// A shopper. `id` is the identity provider's user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// Body of user creation and update.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRequest {
    #[schema(required = true, value_type = String, max_length = 128)]
    pub id: Option<String>,
    #[schema(required = true, value_type = String, max_length = 100)]
    pub first_name: Option<String>,
    #[schema(required = true, value_type = String, max_length = 100)]
    pub last_name: Option<String>,
    #[schema(required = true, value_type = String, format = Email, max_length = 254)]
    pub email: Option<String>,
}

/// A postal address owned by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub id: i64,
    pub street: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub zip_code: String,
    pub user_id: String,
}

/// Body of address creation (`id` ignored) and update (`id` required).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressRequest {
    /// Required on update, ignored on creation.
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    #[schema(required = true, value_type = String, max_length = 200)]
    pub street: Option<String>,
    #[schema(required = true, value_type = String, max_length = 100)]
    pub city: Option<String>,
    #[schema(required = true, value_type = String, max_length = 100)]
    pub state: Option<String>,
    #[schema(required = true, value_type = String, max_length = 100)]
    pub country: Option<String>,
    #[schema(required = true, value_type = String, max_length = 20)]
    pub zip_code: Option<String>,
    #[schema(required = true, value_type = String, max_length = 128)]
    pub user_id: Option<String>,
}

/// Address fields that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAddress {
    pub street: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub zip_code: String,
    pub user_id: String,
}

fn required(value: &Option<String>, message: &str) -> Result<String, ApiError> {
    match value {
        Some(text) if !text.trim().is_empty() => Ok(text.clone()),
        _ => Err(ApiError::invalid(message)),
    }
}

/// One `@` between a non-empty local part and a domain that contains a dot (not at either end); no
/// white space anywhere.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

impl UserRequest {
    pub fn validate(&self) -> Result<User, ApiError> {
        let id = required(&self.id, "invalid user ID")?;
        check_length(&id, "id", limits::MAX_USER_ID_CHARS)?;
        let first_name = required(&self.first_name, "missing first name")?;
        check_length(&first_name, "firstName", limits::MAX_PERSON_NAME_CHARS)?;
        let last_name = required(&self.last_name, "missing last name")?;
        check_length(&last_name, "lastName", limits::MAX_PERSON_NAME_CHARS)?;
        let email = required(&self.email, "missing user email")?;
        let email = email.trim().to_owned();
        check_length(&email, "email", limits::MAX_EMAIL_CHARS)?;
        if !is_valid_email(&email) {
            return Err(ApiError::invalid("invalid user email"));
        }
        Ok(User {
            id,
            first_name,
            last_name,
            email,
        })
    }
}

impl AddressRequest {
    /// The id of an update body: `invalid address ID` unless positive.
    pub fn update_id(&self) -> Result<i64, ApiError> {
        match self.id {
            Some(id) if id > 0 => Ok(id),
            _ => Err(ApiError::invalid("invalid address ID")),
        }
    }

    pub fn validate(&self) -> Result<ValidAddress, ApiError> {
        let bounded = |value: &Option<String>, message: &str, field: &str, max: usize| {
            let text = required(value, message)?;
            check_length(&text, field, max)?;
            Ok::<_, ApiError>(text)
        };
        Ok(ValidAddress {
            street: bounded(
                &self.street,
                "missing street",
                "street",
                limits::MAX_STREET_CHARS,
            )?,
            city: bounded(&self.city, "missing city", "city", limits::MAX_REGION_CHARS)?,
            state: bounded(
                &self.state,
                "missing state",
                "state",
                limits::MAX_REGION_CHARS,
            )?,
            country: bounded(
                &self.country,
                "missing country",
                "country",
                limits::MAX_REGION_CHARS,
            )?,
            zip_code: bounded(
                &self.zip_code,
                "missing zip code",
                "zipCode",
                limits::MAX_ZIP_CODE_CHARS,
            )?,
            user_id: bounded(
                &self.user_id,
                "invalid user ID",
                "userId",
                limits::MAX_USER_ID_CHARS,
            )?,
        })
    }
}

/// A user as `users_updates` events carry it (snake_case).
pub fn user_event_view(user: &User) -> Value {
    json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
    })
}

/// An address as `users_updates` events carry it (snake_case).
pub fn address_event_view(address: &Address) -> Value {
    json!({
        "id": address.id,
        "street": address.street,
        "city": address.city,
        "state": address.state,
        "country": address.country,
        "zip_code": address.zip_code,
        "user_id": address.user_id,
    })
}

impl Keyed for User {
    fn cursor_key(&self) -> String {
        self.id.clone()
    }
}

impl Keyed for Address {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rule() {
        for good in ["a@b.co", "first.last+tag@mail.example.org"] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "", "ab.co", "@b.co", "a@b", "a@@b.co", "a@b@c.co", "a@.co", "a@b.", "a b@c.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn user_messages_in_order() {
        let mut request = UserRequest::default();
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "invalid user ID"
        );
        request.id = Some("user_1".into());
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "missing first name"
        );
        request.first_name = Some("Ada".into());
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "missing last name"
        );
        request.last_name = Some("L".into());
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "missing user email"
        );
        request.email = Some("nope".into());
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "invalid user email"
        );
        request.email = Some(" ada@example.com ".into());
        assert_eq!(request.validate().unwrap().email, "ada@example.com");
    }

    #[test]
    fn address_messages_in_order() {
        let request = AddressRequest::default();
        assert_eq!(
            request.update_id().unwrap_err().to_string(),
            "invalid address ID"
        );
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "missing street"
        );
        let request = AddressRequest {
            street: Some("1 Main".into()),
            city: Some("Town".into()),
            state: Some("ON".into()),
            country: Some("CA".into()),
            zip_code: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(
            request.validate().unwrap_err().to_string(),
            "missing zip code"
        );
    }
}
