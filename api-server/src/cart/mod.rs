//! Shopping carts: one row per added product, owned by a user, cached for 2 hours.

pub mod model;

/// Cache keys of this domain.
pub mod cache_keys {
    use crate::cache::{CacheKey, DEFAULT_TTL};

    pub fn cart_item(id: i64) -> CacheKey {
        CacheKey::new("cart-item-cache", id, DEFAULT_TTL)
    }

    pub fn user_cart(user_id: &str) -> CacheKey {
        CacheKey::new("user-cart-items-cache", user_id, DEFAULT_TTL)
    }
}
