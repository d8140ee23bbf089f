//! JSON shapes of categories and sub-categories (camelCase, as the frontend reads them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::pagination::Keyed;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub offered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubCategory {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Id of the parent category.
    #[sqlx(rename = "category_id")]
    pub category: i64,
    pub offered: bool,
}

impl Keyed for Category {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}

impl Keyed for SubCategory {
    fn cursor_key(&self) -> String {
        self.id.to_string()
    }
}
