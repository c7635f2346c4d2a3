//! The one place where slot names and values are normalised.
//!
//! Canonical slot names are `domain-slot`, lower case, in IC-DST's spelling:
//! `hotel-pricerange`, `train-leaveat`, `hotel-book people`. Services outside
//! MultiWOZ (SGD's `Restaurants_2`) keep their slot names, lower-cased.

/// MultiWOZ's domains; their slot names get MultiWOZ-specific normalisation.
pub const MULTIWOZ_DOMAINS: [&str; 8] = [
    "attraction",
    "bus",
    "hospital",
    "hotel",
    "police",
    "restaurant",
    "taxi",
    "train",
];

/// The canonical name of `slot` in `domain`.
///
/// `slot` may be spelled as in MultiWOZ 2.1 (`pricerange`, `leaveAt`, with booking
/// slots given `book` = true), the ontology (`price range`, `book people`), MultiWOZ 2.2
/// (`bookpeople`, or `hotel-bookpeople` with the domain prefix) or IC-DST.
pub fn canonical_slot(domain: &str, slot: &str, book: bool) -> String {
    let domain = domain.trim().to_lowercase();
    let mut slot = slot.trim().to_lowercase();
    if let Some(rest) = slot.strip_prefix(&format!("{domain}-")) {
        slot = rest.to_string();
    }
    if MULTIWOZ_DOMAINS.contains(&domain.as_str()) {
        let squashed: String = slot.chars().filter(|c| !matches!(c, ' ' | '_')).collect();
        let (is_book, base) = match squashed.strip_prefix("book") {
            Some(rest) if !rest.is_empty() => (true, rest.to_string()),
            _ => (book, squashed),
        };
        slot = if is_book {
            format!("book {base}")
        } else {
            base
        };
    }
    format!("{domain}-{slot}")
}

/// The canonical form of a full slot name such as `hotel-price range`.
pub fn canonical_slot_name(name: &str) -> String {
    match name.split_once('-') {
        Some((domain, slot)) => canonical_slot(domain, slot, false),
        None => name.trim().to_lowercase(),
    }
}

/// The normalised form of a value, or `None` for values that mean "not set".
pub fn normalize_value(value: &str) -> Option<String> {
    let lowered = value.trim().to_lowercase();
    let collapsed = lowered.split_whitespace().collect::<Vec<_>>().join(" ");
    let v = collapsed.as_str();
    if matches!(v, "" | "not mentioned" | "none" | "not given") {
        return None;
    }
    let v = match v {
        "dontcare" | "don't care" | "do n't care" | "dont care" | "do not care" | "any" => {
            "dontcare".to_string()
        }
        "guesthouse" | "guesthouses" => "guest house".to_string(),
        other => normalize_time(other).unwrap_or_else(|| other.to_string()),
    };
    Some(v)
}

/// `7:50` → `07:50`; anything that is not a clock time is left alone.
fn normalize_time(v: &str) -> Option<String> {
    let (h, m) = v.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let hours: u32 = h.parse().ok()?;
    let minutes: u32 = m.parse().ok()?;
    (hours < 24 && minutes < 60).then(|| format!("{hours:02}:{minutes:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_of_a_slot_agree() {
        for (domain, slot, book) in [
            ("hotel", "pricerange", false),
            ("Hotel", "price range", false),
            ("hotel", "hotel-pricerange", false),
            ("hotel", "price_range", false),
        ] {
            assert_eq!(canonical_slot(domain, slot, book), "hotel-pricerange");
        }
        assert_eq!(canonical_slot("train", "leaveAt", false), "train-leaveat");
        assert_eq!(canonical_slot("train", "leave at", false), "train-leaveat");
        assert_eq!(canonical_slot("hotel", "people", true), "hotel-book people");
        assert_eq!(
            canonical_slot("hotel", "bookpeople", false),
            "hotel-book people"
        );
        assert_eq!(
            canonical_slot("hotel", "book people", false),
            "hotel-book people"
        );
        assert_eq!(
            canonical_slot_name("restaurant-book time"),
            "restaurant-book time"
        );
        assert_eq!(
            canonical_slot("Restaurants_2", "number_of_seats", false),
            "restaurants_2-number_of_seats"
        );
    }

    #[test]
    fn values_are_normalised() {
        assert_eq!(normalize_value("not mentioned"), None);
        assert_eq!(normalize_value(""), None);
        assert_eq!(normalize_value("do n't care").as_deref(), Some("dontcare"));
        assert_eq!(
            normalize_value(" GuestHouse ").as_deref(),
            Some("guest house")
        );
        assert_eq!(normalize_value("7:50").as_deref(), Some("07:50"));
        assert_eq!(
            normalize_value("bishops  stortford").as_deref(),
            Some("bishops stortford")
        );
        assert_eq!(normalize_value("1345").as_deref(), Some("1345"));
    }
}
