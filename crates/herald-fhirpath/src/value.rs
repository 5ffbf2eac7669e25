//! The values a FHIRPath expression produces: System values (owned) and FHIR elements
//! (borrowed nodes of the input JSON, carrying their `_x` primitive-extension sibling
//! and a type hint).

use serde_json::Value;

use crate::decimal::Decimal;
use crate::temporal::{CalendarUnit, Temporal, TemporalKind};
use crate::types;

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(String),
    /// A `Date`, `DateTime` or `Time` (see [`Temporal::kind`]).
    Temporal(Temporal),
    Quantity(Quantity),
    /// An element or resource of the input (or of an environment variable).
    Node(Node<'a>),
    /// The result of `type()`: a namespace and a name.
    Type(TypeSpecifier),
}

/// A FHIR element in the input JSON.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// The JSON value; `None` for a primitive that only has extensions.
    pub(crate) value: Option<&'a Value>,
    /// The `_name` sibling of a primitive (its `id` and `extension`).
    pub(crate) extension: Option<&'a Value>,
    /// The element name in its parent (`""` for a root).
    pub(crate) name: &'a str,
    /// Known FHIR type (from a choice-type suffix), if any.
    pub(crate) type_hint: Option<&'a str>,
}

/// A FHIRPath quantity: a decimal value and a UCUM unit or calendar duration keyword.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: String,
    /// Whether the unit is a calendar keyword (`4 days`) rather than a UCUM code.
    pub calendar: bool,
}

/// A type name with an optional namespace (`FHIR.Patient`, `System.Integer`, `code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpecifier {
    pub namespace: Option<String>,
    pub name: String,
}

impl TypeSpecifier {
    pub(crate) fn new(namespace: Option<String>, name: String) -> TypeSpecifier {
        TypeSpecifier { namespace, name }
    }
}

impl Quantity {
    pub(crate) fn new(value: Decimal, unit: String, calendar: bool) -> Quantity {
        Quantity {
            value,
            unit,
            calendar,
        }
    }

    /// The unit for comparison: calendar keywords up to weeks equal their UCUM
    /// definite-duration codes; `year`/`month` stay apart from `a`/`mo`.
    pub(crate) fn canonical_unit(&self) -> &str {
        let unit = self.unit.as_str();
        match unit.trim_end_matches('s') {
            "year" => "year",
            "month" => "month",
            "week" => "wk",
            "day" => "d",
            "hour" => "h",
            "minute" => "min",
            "second" => "s",
            "millisecond" => "ms",
            _ => unit,
        }
    }

    /// Calendar unit for date arithmetic; UCUM `a` and `mo` are not calendar units.
    pub(crate) fn calendar_unit(&self) -> Option<CalendarUnit> {
        Some(match self.canonical_unit() {
            "year" => CalendarUnit::Year,
            "month" => CalendarUnit::Month,
            "wk" => CalendarUnit::Week,
            "d" => CalendarUnit::Day,
            "h" => CalendarUnit::Hour,
            "min" => CalendarUnit::Minute,
            "s" => CalendarUnit::Second,
            "ms" => CalendarUnit::Millisecond,
            _ => return None,
        })
    }

    pub(crate) fn render(&self) -> String {
        if self.calendar {
            format!("{} {}", self.value, self.unit)
        } else {
            format!("{} '{}'", self.value, self.unit)
        }
    }
}

pub(crate) fn number_to_item<'a>(
    number: &serde_json::Number,
    as_decimal: bool,
) -> Option<Item<'a>> {
    if !as_decimal {
        if let Some(i) = number.as_i64() {
            return Some(Item::Integer(i));
        }
    }
    if let Some(i) = number.as_i64() {
        return Some(Item::Decimal(Decimal::from_int(i)));
    }
    // Shortest round-trip text of the f64 (JSON decimals are read as f64).
    let f = number.as_f64()?;
    Decimal::parse(&format!("{f}")).map(Item::Decimal)
}

impl<'a> Node<'a> {
    pub(crate) fn root(value: &'a Value) -> Node<'a> {
        Node {
            value: Some(value),
            extension: None,
            name: "",
            type_hint: None,
        }
    }

    /// The FHIR type name, if known (inferred; see the crate docs).
    pub fn fhir_type(&self) -> Option<&'a str> {
        if let Some(hint) = self.type_hint {
            return Some(hint);
        }
        types::infer_element_type(self.name, self.value?)
    }

    pub fn json(&self) -> Option<&'a Value> {
        self.value
    }

    pub(crate) fn is_primitive(&self) -> bool {
        !matches!(self.value, Some(Value::Object(_)) | Some(Value::Array(_)))
    }

    /// The node's primitive value as a System value; `None` for complex nodes and for
    /// primitives without a value.
    pub(crate) fn primitive(&self) -> Option<Item<'static>> {
        match self.value? {
            Value::Bool(b) => Some(Item::Boolean(*b)),
            Value::String(s) => {
                // Date-typed elements compare as dates, not as text.
                let temporal = match self.fhir_type() {
                    Some("date") => Temporal::parse_date(s),
                    Some("dateTime" | "instant") => Temporal::parse_datetime(s),
                    Some("time") => Temporal::parse_time(s),
                    _ => None,
                };
                Some(temporal.map_or_else(|| Item::String(s.clone()), Item::Temporal))
            }
            Value::Number(n) => number_to_item(n, self.type_hint == Some("decimal")),
            _ => None,
        }
    }

    /// A Quantity element as a System quantity (unit from `code` when present).
    pub(crate) fn quantity(&self) -> Option<Quantity> {
        let object = self.value?.as_object()?;
        let value = match number_to_item(object.get("value")?.as_number()?, true)? {
            Item::Decimal(d) => d,
            _ => return None,
        };
        let unit = object
            .get("code")
            .or_else(|| object.get("unit"))
            .and_then(Value::as_str)
            .unwrap_or("1");
        Some(Quantity::new(value, unit.to_owned(), false))
    }
}

impl<'a> Item<'a> {
    /// `(namespace, name)` of the item's type, when known.
    pub fn type_name(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Item::Boolean(_) => ("System", "Boolean".into()),
            Item::Integer(_) => ("System", "Integer".into()),
            Item::Decimal(_) => ("System", "Decimal".into()),
            Item::String(_) => ("System", "String".into()),
            Item::Quantity(_) => ("System", "Quantity".into()),
            Item::Temporal(t) => (
                "System",
                match t.kind {
                    TemporalKind::Date => "Date",
                    TemporalKind::DateTime => "DateTime",
                    TemporalKind::Time => "Time",
                }
                .into(),
            ),
            Item::Node(node) => ("FHIR", node.fhir_type()?.to_owned()),
            Item::Type(_) => return None,
        })
    }

    /// The item as JSON (nodes as they are in the input; System values as their
    /// natural JSON form, temporal values and quantities as FHIRPath text).
    pub fn to_json(&self) -> Value {
        match self {
            Item::Boolean(b) => Value::Bool(*b),
            Item::Integer(i) => Value::from(*i),
            Item::Decimal(d) => d
                .to_string()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            Item::String(s) => Value::String(s.clone()),
            Item::Temporal(t) => Value::String(t.to_string()),
            Item::Quantity(q) => Value::String(q.render()),
            Item::Node(n) => n.value.cloned().unwrap_or(Value::Null),
            Item::Type(t) => Value::String(match &t.namespace {
                Some(ns) => format!("{ns}.{}", t.name),
                None => t.name.clone(),
            }),
        }
    }

    /// The System value of the item: nodes become their primitive value (or a
    /// Quantity for Quantity elements); other items are returned as they are.
    pub(crate) fn system(&self) -> Item<'a> {
        if let Item::Node(node) = self {
            if let Some(p) = node.primitive() {
                return p;
            }
            if matches!(
                node.fhir_type(),
                None | Some(
                    "Quantity"
                        | "Age"
                        | "Duration"
                        | "Distance"
                        | "Count"
                        | "SimpleQuantity"
                        | "MoneyQuantity"
                )
            ) {
                if let Some(q) = node.quantity() {
                    return Item::Quantity(q);
                }
            }
        }
        self.clone()
    }

    /// The item's text when its System value ([`Item::system`]) is a String, borrowed:
    /// a System string, or a string-valued node whose type does not make it a
    /// date/time. `None` otherwise (including date-typed nodes, whatever their text).
    pub(crate) fn system_str(&self) -> Option<&str> {
        match self {
            Item::String(s) => Some(s),
            Item::Node(node) => match node.value? {
                Value::String(s)
                    if !matches!(
                        node.fhir_type(),
                        Some("date" | "dateTime" | "instant" | "time")
                    ) =>
                {
                    Some(s)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The item's text if it is a string (System string or string-valued node).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Item::String(s) => Some(s),
            Item::Node(n) => n.value?.as_str(),
            _ => None,
        }
    }
}
