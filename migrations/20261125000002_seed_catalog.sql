-- The seed catalog (shared/spec/seed-data.md); identities continue after the highest seeded id.

INSERT INTO categories (id, name, offered, description) VALUES
    (1, 'Clothing', true, 'Llama inspired clothing that embraces all cultures and promotes well-being and self-love.'),
    (2, 'Accessories', true, 'Llama inspired Accessories. Find the perfect gift for your loved ones. Or yourself.'),
    (3, 'Drinkware', true, 'Llama inspired drinkware. Not just usable but also beautiful. Drink, Live, Laugh, Love.');

INSERT INTO sub_categories (id, name, category_id, offered, description) VALUES
    (1, 'T-shirts', 1, true, 'T-shirts like never before. Llama inspired, human approved.'),
    (2, 'Hoodies', 1, true, 'Hoodies for days good and bad. Cool design to keep you warm.'),
    (3, 'Sweatshirts', 1, true, 'Sweatshirts that make you sweat. In a good way.'),
    (4, 'Shorts', 1, true, 'Shorts for all occasions. Llama inspired.'),
    (5, 'Candles', 2, true, 'Candles to suit every mood. Handmade with love.'),
    (6, 'Desk Mats', 2, true, 'Desk mats that make your desk look good. And feel good'),
    (7, 'Notebooks', 2, true, 'Notebooks that inspire creativity. And productivity.'),
    (8, 'Bottles', 3, true, 'Bottles that fit your style. And your bag. And your life.'),
    (9, 'Mugs', 3, true, 'Mugs to empower your mornings. And your evenings. And your nights.'),
    (10, 'Tumblers', 3, true, 'Tumblers that keep your drinks hot. Or cold. Or just right.');

INSERT INTO products (id, name, category_id, sub_category_id, price, previous_price, offered, image_url, description) VALUES
    (1, 'Llama Chinese Qipao Candle', 2, 5, 25, 34, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716258/llama_chinese_qipao_candle_ojvfpw.png', 'Soy wax scented candle with a label showcasing a Llama in a traditional Chinese qipao, holding a paper lantern.'),
    (2, 'Llama Moroccan Candle', 2, 5, 27, 30, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716256/llama_moroccan_candle_nkdxce.png', 'Scented candle with a label featuring a Llama in traditional Moroccan attire, surrounded by intricate mosaic tiles'),
    (3, 'Llama Mauve Candle', 2, 5, 20, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716257/llama_mauve_candle_ieopkf.png', 'Candle featuring an adorable Llama wearing a mauve scarf sitting besides fireplace.'),
    (4, 'Llama Comfy Desk Mat', 2, 6, 15, 15, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716247/llama_comfy_book_desk_mat_qp8eb7.png', 'Desk mat with a cute Llama lying on a comfy pillow, reading a book under a cozy lamp.'),
    (5, 'Llama Tech Desk Mat', 2, 6, 20, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716246/llama_programmer_desk_mat_xvic0t.png', 'Desk mat featuring an adorable Llama working at a computer, with glasses perched on its nose and a steaming cup of coffee by its side.'),
    (6, 'Llama Cat Cloud Notebook', 2, 7, 20, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716238/llama_cat_cloud_notebook_iynocd.png', 'Notebook featuring an adorable Llama sitting next to a cute cat between clouds.'),
    (7, 'Llama Bonefire Notebook', 2, 7, 25, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716237/llama_green_guitar_bonefore_notebook_pl8gzx.png', 'Illuminating notebook with a guitar playing Llama beside a bonefire on a star filled night.'),
    (8, 'Llama Campfire Hoodie', 1, 2, 55, 65, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716227/llama_bonefire_group_hoody_gichfe.png', 'Hoodie featuring Llamas sitting around a campfire with a night sky filled with constellations.'),
    (9, 'Llama Indian Floral Hoodie', 1, 2, 60, 70, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716226/llama_indian_kurta_hoody_qgo60t.png', 'Hoodie with a Llama in traditional Indian attire surrounded by vibrant flowers.'),
    (10, 'Llama Superhero Hoodie', 1, 2, 50, 60, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716226/llama_superhero_hoody_rskukl.png', 'Hoodie featuring a Llama in a superhero costume, flying through the sky with a cape.'),
    (11, 'Llama Chinese Shorts', 1, 4, 30, 40, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716218/llama_chinese_shorts_augfj3.png', 'Shorts featuring two Llama in traditional Chinese attire, surrounded by paper lanterns and bamboo.'),
    (12, 'Llama Moon Shorts', 1, 4, 25, 30, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716217/llama_moon_shorts_jegfxy.png', 'Shorts featuring a Llama sleeping on a crescent moon, surrounded by clouds and stars.'),
    (13, 'Llama Moon Sweatshirt', 1, 3, 45, 50, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716207/llama_moon_sweatshirt_amegsn.png', 'Sweatshirt featuring a Llama sleeping on a crescent moon, surrounded by clouds and stars.'),
    (14, 'Llama Cozy Sweatshirt', 1, 3, 50, 60, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716207/llama_reading_soothing_sweatshirt_zfa2xd.png', 'Sweatshirt featuring an adorable Llama reading a book under a blanket fort, with fairy lights around.'),
    (15, 'Llama Winter Sweatshirt', 1, 3, 55, 65, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716206/llama_scarf_blue_sweatshirt_vucslb.png', 'Sweatshirt featuring a Llama wrapped in a cozy scarf, holding a cup of hot cocoa in a winter landscape.'),
    (16, 'Llama Japanese Kimono T-shirt', 1, 1, 25, 30, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716198/llama_japanese_kimono_lavender_eqhfo0.png', 'T-shirt featuring an adorable Llama dressed in a traditional Japanese kimono, holding a fan and standing under a cherry blossom tree.'),
    (17, 'Llama Skateboard T-shirt', 1, 1, 20, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716197/llama_skateboard_tshirt_gzlrie.png', 'T-shirt featuring a fun Llama riding a skateboard with a backwards cap, surrounded by graffiti-style doodles.'),
    (18, 'Llama Hot Air Balloon T-shirt', 1, 1, 20, 25, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716197/llama_hawaiin_lei_balloon_tshirt_yp6ik2.png', 'T-shirt featuring a adorable Llama wearing a Hawaiian lei and flying in a hot balloon, with a smile.'),
    (19, 'Llama African Tumbler', 3, 10, 30, 35, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716165/llama_african_tumbler_sif9ig.png', 'Tumbler featuring a group of Llamas in traditional African attire, standing against a savanna backdrop with an acacia tree.'),
    (20, 'Llama Ushanka Tumbler', 3, 10, 35, 40, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716164/llama_winter_ushanka_hat_fd6xv4.png', 'Tumbler with a festive Llama wearing a ushanka hat, surrounded by snow flakes.'),
    (21, 'Llama Japanese Kimono Bottle', 3, 8, 40, 45, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716156/llama_japanese_kimono_bottle_yj1se5.png', 'Stainless steel water bottle featuring a playful Llama dressed in a Japanese kimono, surrounded by cherry blossoms.'),
    (22, 'Llama Taj Mahal Bottle', 3, 8, 45, 50, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716155/llama_taj_mahal_bottle_mxp7te.png', 'Stainless steel bottle with a Llama adorned in vibrant Indian jewelry, standing in front of the Taj Mahal.'),
    (23, 'Llama Arizona Mug', 3, 9, 35, 40, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716144/texas_llama_mug_qhmaf8.png', 'Mug with an adorable Llama surrounded by cacti and desert flowers.'),
    (24, 'Llama Explorer Mug', 3, 9, 40, 55, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716144/llama_pastel_green_mug_dmc3mq.png', 'Mug with an adventurous Llama surrounded by mountains and river.'),
    (25, 'Llama Mauve Patterned Mug', 3, 9, 30, 35, true, 'https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716145/llama_white_mauve_mug_ub2jcb.png', 'Mug with an adorable Llama among a unique inspirational pattern with a Mauve backdrop.');

INSERT INTO hero_products (product_id) VALUES (3), (4), (14), (23);

INSERT INTO category_hero_products (category_id, sub_category_id, product_id) VALUES
    (1, 1, 16),
    (1, 2, 8),
    (1, 3, 13),
    (1, 4, 11),
    (2, 5, 1),
    (2, 6, 4),
    (2, 7, 6),
    (3, 8, 21),
    (3, 9, 23),
    (3, 10, 19);

SELECT setval(pg_get_serial_sequence('categories', 'id'), (SELECT max(id) FROM categories));
SELECT setval(pg_get_serial_sequence('sub_categories', 'id'), (SELECT max(id) FROM sub_categories));
SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products));
