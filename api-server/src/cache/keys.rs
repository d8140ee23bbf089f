//! Every cache key of the store, in one table. A domain names the entries it reads and the entries
//! its mutations make stale through these builders, so no domain reaches into another's keys and a
//! key's name is written once. The names (`product-cache/7`) are those of the original service and
//! are shared by every replica of one version: renaming one is a deployment-visible change.
//!
//! | keyspace                     | suffix                      | holds                              |
//! |------------------------------|-----------------------------|------------------------------------|
//! | `product-cache`              | product id                  | one product (24 h)                 |
//! | `products-cache`             | `all`, `category/{id}`, `subcategory/{id}` | product lists (24 h) |
//! | `hero-products-cache`        | `all`, `category/{id}`      | hero lists (24 h)                  |
//! | `category-cache`             | category id                 | one category                       |
//! | `categories-cache`           | `all`                       | every category                     |
//! | `subcategory-cache`          | sub-category id             | one sub-category                   |
//! | `subcategories-cache`        | `all`, `category/{id}`      | sub-category lists                 |
//! | `cart-item-cache`            | cart row id                 | one cart row                       |
//! | `user-cart-items-cache`      | user id                     | a user's cart                      |
//! | `order-cache`                | order id                    | one order                          |
//! | `user-orders-cache`          | user id                     | a user's orders                    |
//! | `order-item-cache`           | order item id               | one order item                     |
//! | `order-items-cache`          | order id                    | an order's items                   |
//! | `detailed-order-cache`       | order id                    | an order with its items            |
//! | `user-detailed-orders-cache` | user id                     | a user's orders with their items   |
//! | `user-cache`                 | user id                     | one user                           |
//! | `users-cache`                | `all`                       | every user                         |
//! | `address-cache`              | address id                  | one address                        |
//! | `user-addresses-cache`       | user id                     | a user's addresses                 |
//!
//! Entries without a time in the table live [`DEFAULT_TTL`] (2 h); product entries [`PRODUCT_TTL`].

use super::{CacheKey, DEFAULT_TTL, PRODUCT_TTL};

// Products.

pub fn product(id: i64) -> CacheKey {
    CacheKey::new("product-cache", id, PRODUCT_TTL)
}

pub fn all_products() -> CacheKey {
    CacheKey::fixed("products-cache/all", PRODUCT_TTL)
}

pub fn products_of_category(category_id: i64) -> CacheKey {
    CacheKey::new(
        "products-cache",
        format!("category/{category_id}"),
        PRODUCT_TTL,
    )
}

pub fn products_of_sub_category(sub_category_id: i64) -> CacheKey {
    CacheKey::new(
        "products-cache",
        format!("subcategory/{sub_category_id}"),
        PRODUCT_TTL,
    )
}

pub fn hero_products() -> CacheKey {
    CacheKey::fixed("hero-products-cache/all", PRODUCT_TTL)
}

pub fn hero_products_of_category(category_id: i64) -> CacheKey {
    CacheKey::new(
        "hero-products-cache",
        format!("category/{category_id}"),
        PRODUCT_TTL,
    )
}

// Categories.

pub fn category(id: i64) -> CacheKey {
    CacheKey::new("category-cache", id, DEFAULT_TTL)
}

pub fn all_categories() -> CacheKey {
    CacheKey::fixed("categories-cache/all", DEFAULT_TTL)
}

pub fn sub_category(id: i64) -> CacheKey {
    CacheKey::new("subcategory-cache", id, DEFAULT_TTL)
}

pub fn all_sub_categories() -> CacheKey {
    CacheKey::fixed("subcategories-cache/all", DEFAULT_TTL)
}

pub fn sub_categories_of(category_id: i64) -> CacheKey {
    CacheKey::new(
        "subcategories-cache",
        format!("category/{category_id}"),
        DEFAULT_TTL,
    )
}

// Cart.

pub fn cart_item(id: i64) -> CacheKey {
    CacheKey::new("cart-item-cache", id, DEFAULT_TTL)
}

pub fn user_cart(user_id: &str) -> CacheKey {
    CacheKey::new("user-cart-items-cache", user_id, DEFAULT_TTL)
}

// Orders.

pub fn order(id: i64) -> CacheKey {
    CacheKey::new("order-cache", id, DEFAULT_TTL)
}

pub fn user_orders(user_id: &str) -> CacheKey {
    CacheKey::new("user-orders-cache", user_id, DEFAULT_TTL)
}

pub fn order_item(id: i64) -> CacheKey {
    CacheKey::new("order-item-cache", id, DEFAULT_TTL)
}

pub fn order_items(order_id: i64) -> CacheKey {
    CacheKey::new("order-items-cache", order_id, DEFAULT_TTL)
}

pub fn detailed_order(order_id: i64) -> CacheKey {
    CacheKey::new("detailed-order-cache", order_id, DEFAULT_TTL)
}

pub fn user_detailed_orders(user_id: &str) -> CacheKey {
    CacheKey::new("user-detailed-orders-cache", user_id, DEFAULT_TTL)
}

// Users and addresses.

pub fn user(id: &str) -> CacheKey {
    CacheKey::new("user-cache", id, DEFAULT_TTL)
}

pub fn all_users() -> CacheKey {
    CacheKey::fixed("users-cache/all", DEFAULT_TTL)
}

pub fn address(id: i64) -> CacheKey {
    CacheKey::new("address-cache", id, DEFAULT_TTL)
}

pub fn user_addresses(user_id: &str) -> CacheKey {
    CacheKey::new("user-addresses-cache", user_id, DEFAULT_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are shared with every running replica: a rename must be deliberate.
    #[test]
    fn key_names_are_those_of_the_original_service() {
        let names: Vec<String> = [
            product(7),
            all_products(),
            products_of_category(2),
            products_of_sub_category(3),
            hero_products(),
            hero_products_of_category(2),
            category(2),
            all_categories(),
            sub_category(3),
            all_sub_categories(),
            sub_categories_of(2),
            cart_item(9),
            user_cart("u1"),
            order(4),
            user_orders("u1"),
            order_item(5),
            order_items(4),
            detailed_order(4),
            user_detailed_orders("u1"),
            user("u1"),
            all_users(),
            address(6),
            user_addresses("u1"),
        ]
        .iter()
        .map(|key| key.name().to_owned())
        .collect();
        assert_eq!(
            names,
            [
                "product-cache/7",
                "products-cache/all",
                "products-cache/category/2",
                "products-cache/subcategory/3",
                "hero-products-cache/all",
                "hero-products-cache/category/2",
                "category-cache/2",
                "categories-cache/all",
                "subcategory-cache/3",
                "subcategories-cache/all",
                "subcategories-cache/category/2",
                "cart-item-cache/9",
                "user-cart-items-cache/u1",
                "order-cache/4",
                "user-orders-cache/u1",
                "order-item-cache/5",
                "order-items-cache/4",
                "detailed-order-cache/4",
                "user-detailed-orders-cache/u1",
                "user-cache/u1",
                "users-cache/all",
                "address-cache/6",
                "user-addresses-cache/u1",
            ]
        );
        assert_eq!(product(7).keyspace(), "product-cache");
    }
}
