//! Serdes: how typed keys and values become bytes and back.
//!
//! A [`Serde<T>`] turns a `T` into `Option<Bytes>` (`None` is Kafka's null) and reads
//! it back from `Option<&[u8]>`, straight out of the fetched buffer with no copy in
//! between.
//! Built-ins cover bytes, UTF-8 strings, big-endian integers (the byte layouts of
//! Kafka's `Serdes.Integer()`/`Long()`, so data is interchangeable with JVM apps),
//! `()` for null-only keys, and JSON through serde behind the `json` feature.
//!
//! `Option<T>` ([`OptionSerde`]) maps `None` to null, so `Option<String>` reads topics
//! with null keys.
//! [`DefaultSerde`] names each type's usual serde so the DSL can pick it at compile time
//! (`builder.stream::<String, i64>("topic")`); anything else is passed explicitly.

pub use bytes::Bytes;

use crate::error::{Error, Result};

/// Converts between `T` and the bytes of a Kafka key or value.
pub trait Serde<T>: Send + Sync + 'static {
    /// Serializes `value`; `None` writes a null.
    fn serialize(&self, value: &T) -> Result<Option<Bytes>>;
    /// Deserializes bytes (`None` is a null) into a `T`.
    fn deserialize(&self, data: Option<&[u8]>) -> Result<T>;
    /// Appends the bytes of `value` to `out` and returns true, or returns false for a
    /// null (appending nothing). Sinks use this to encode without an allocation per
    /// record; the default goes through [`Serde::serialize`].
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<bool> {
        match self.serialize(value)? {
            Some(b) => {
                out.extend_from_slice(&b);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Makes any serde nullable: `None` is null, `Some(t)` is `t`'s bytes. This is the
/// default serde of `Option<T>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionSerde<S>(pub S);

impl<T, S: Serde<T>> Serde<Option<T>> for OptionSerde<S> {
    fn serialize(&self, value: &Option<T>) -> Result<Option<Bytes>> {
        match value {
            Some(v) => self.0.serialize(v),
            None => Ok(None),
        }
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Option<T>> {
        match data {
            Some(_) => self.0.deserialize(data).map(Some),
            None => Ok(None),
        }
    }

    fn serialize_into(&self, value: &Option<T>, out: &mut Vec<u8>) -> Result<bool> {
        match value {
            Some(v) => self.0.serialize_into(v, out),
            None => Ok(false),
        }
    }
}

fn required<'a>(data: Option<&'a [u8]>, what: &str) -> Result<&'a [u8]> {
    data.ok_or_else(|| {
        Error::Serde(format!(
            "null where {what} was expected (use Option<{what}> for nullable data)"
        ))
    })
}

/// Raw bytes, passed through without copying. Works for `Bytes` and `Vec<u8>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerde;

impl Serde<Bytes> for BytesSerde {
    fn serialize(&self, value: &Bytes) -> Result<Option<Bytes>> {
        Ok(Some(value.clone()))
    }
    fn serialize_into(&self, value: &Bytes, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(value);
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Bytes> {
        required(data, "Bytes").map(Bytes::copy_from_slice)
    }
}

impl Serde<Vec<u8>> for BytesSerde {
    fn serialize(&self, value: &Vec<u8>) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::copy_from_slice(value)))
    }
    fn serialize_into(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(value);
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Vec<u8>> {
        required(data, "Vec<u8>").map(|b| b.to_vec())
    }
}

/// UTF-8 strings; invalid UTF-8 is a deserialization error.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize(&self, value: &String) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::copy_from_slice(value.as_bytes())))
    }
    fn serialize_into(&self, value: &String, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(value.as_bytes());
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<String> {
        let b = required(data, "String")?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| Error::Serde(format!("invalid UTF-8: {e}")))
    }
}

macro_rules! int_serde {
    ($name:ident, $t:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl Serde<$t> for $name {
            fn serialize(&self, value: &$t) -> Result<Option<Bytes>> {
                Ok(Some(Bytes::copy_from_slice(&value.to_be_bytes())))
            }
            fn serialize_into(&self, value: &$t, out: &mut Vec<u8>) -> Result<bool> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(true)
            }
            fn deserialize(&self, data: Option<&[u8]>) -> Result<$t> {
                let b = required(data, stringify!($t))?;
                let arr: [u8; std::mem::size_of::<$t>()] = b.try_into().map_err(|_| {
                    Error::Serde(format!(
                        "{} bytes where a {}-byte big-endian {} was expected",
                        b.len(),
                        std::mem::size_of::<$t>(),
                        stringify!($t)
                    ))
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    };
}

int_serde!(
    I32Serde,
    i32,
    "Big-endian `i32`, byte-compatible with Kafka's `Serdes.Integer()`."
);
int_serde!(
    I64Serde,
    i64,
    "Big-endian `i64`, byte-compatible with Kafka's `Serdes.Long()`."
);
int_serde!(U64Serde, u64, "Big-endian `u64`.");

/// `()`: always null, like Kafka's `Serdes.Void()`; non-null input is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitSerde;

impl Serde<()> for UnitSerde {
    fn serialize(&self, _: &()) -> Result<Option<Bytes>> {
        Ok(None)
    }
    fn serialize_into(&self, _: &(), _: &mut Vec<u8>) -> Result<bool> {
        Ok(false)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<()> {
        match data {
            None => Ok(()),
            Some(b) => Err(Error::Serde(format!(
                "{} bytes where a null (unit) was expected",
                b.len()
            ))),
        }
    }
}

/// JSON through serde: any `T: Serialize + DeserializeOwned`.
#[cfg(feature = "json")]
pub struct JsonSerde<T>(std::marker::PhantomData<fn() -> T>);

#[cfg(feature = "json")]
impl<T> JsonSerde<T> {
    /// A JSON serde for `T`.
    pub fn new() -> Self {
        JsonSerde(std::marker::PhantomData)
    }
}

#[cfg(feature = "json")]
impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "json")]
impl<T> Clone for JsonSerde<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

#[cfg(feature = "json")]
impl<T> Serde<T> for JsonSerde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Bytes>> {
        serde_json::to_vec(value)
            .map(|v| Some(Bytes::from(v)))
            .map_err(|e| Error::Serde(format!("JSON: {e}")))
    }
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<bool> {
        serde_json::to_writer(&mut *out, value).map_err(|e| Error::Serde(format!("JSON: {e}")))?;
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<T> {
        let b = required(data, std::any::type_name::<T>())?;
        serde_json::from_slice(b).map_err(|e| Error::Serde(format!("JSON: {e}")))
    }
}

/// Wraps a type so that its default serde is JSON: `builder.stream::<String, Json<Order>>(..)`.
#[cfg(feature = "json")]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Json<T>(pub T);

#[cfg(feature = "json")]
impl<T> Serde<Json<T>> for JsonSerde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &Json<T>) -> Result<Option<Bytes>> {
        Serde::<T>::serialize(self, &value.0)
    }
    fn serialize_into(&self, value: &Json<T>, out: &mut Vec<u8>) -> Result<bool> {
        Serde::<T>::serialize_into(self, &value.0, out)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Json<T>> {
        Serde::<T>::deserialize(self, data).map(Json)
    }
}

/// The serde a type uses when none is given.
pub trait DefaultSerde: Sized + 'static {
    /// The serde type.
    type Serde: Serde<Self>;
    /// An instance of it.
    fn default_serde() -> Self::Serde;
}

macro_rules! default_serde {
    ($t:ty, $s:ident) => {
        impl DefaultSerde for $t {
            type Serde = $s;
            fn default_serde() -> $s {
                $s
            }
        }
    };
}

default_serde!(String, StringSerde);
default_serde!(Bytes, BytesSerde);
default_serde!(Vec<u8>, BytesSerde);
default_serde!(i32, I32Serde);
default_serde!(i64, I64Serde);
default_serde!(u64, U64Serde);
default_serde!((), UnitSerde);

impl<T: DefaultSerde> DefaultSerde for Option<T> {
    type Serde = OptionSerde<T::Serde>;
    fn default_serde() -> Self::Serde {
        OptionSerde(T::default_serde())
    }
}

#[cfg(feature = "json")]
impl<T> DefaultSerde for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    type Serde = JsonSerde<T>;
    fn default_serde() -> JsonSerde<T> {
        JsonSerde::new()
    }
}

#[cfg(feature = "json")]
impl<T> std::fmt::Debug for JsonSerde<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSerde")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: PartialEq + std::fmt::Debug, S: Serde<T>>(s: &S, v: T) {
        let bytes = s.serialize(&v).unwrap();
        assert_eq!(s.deserialize(bytes.as_deref()).unwrap(), v);
        // serialize_into writes the same bytes (after what is already in the buffer).
        let mut out = b"prefix".to_vec();
        let non_null = s.serialize_into(&v, &mut out).unwrap();
        assert_eq!(non_null, bytes.is_some());
        assert_eq!(&out[6..], bytes.as_deref().unwrap_or(&[]));
    }

    #[test]
    fn builtins_round_trip() {
        round_trip(&StringSerde, "héllo".to_string());
        round_trip(&I32Serde, -7i32);
        round_trip(&I64Serde, i64::MIN);
        round_trip(&U64Serde, u64::MAX);
        round_trip(&BytesSerde, Bytes::from_static(b"\x00\xff"));
        round_trip(&BytesSerde, vec![1u8, 2, 3]);
        round_trip(&UnitSerde, ());
        round_trip(&OptionSerde(StringSerde), Some("x".to_string()));
        round_trip(&OptionSerde(StringSerde), None::<String>);
        round_trip(&Option::<i64>::default_serde(), Some(3));
    }

    #[test]
    fn integers_are_big_endian_like_kafka() {
        assert_eq!(
            I32Serde.serialize(&1).unwrap().unwrap().as_ref(),
            &[0, 0, 0, 1]
        );
        assert_eq!(
            I64Serde.serialize(&258).unwrap().unwrap().as_ref(),
            &[0, 0, 0, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = Serde::<i64>::deserialize(&I64Serde, Some(b"abc")).unwrap_err();
        assert!(
            e.to_string()
                .contains("3 bytes where a 8-byte big-endian i64"),
            "{e}"
        );
        let e = Serde::<String>::deserialize(&StringSerde, Some(b"\xff")).unwrap_err();
        assert!(e.to_string().contains("invalid UTF-8"), "{e}");
        let e = Serde::<String>::deserialize(&StringSerde, None).unwrap_err();
        assert!(e.to_string().contains("null where String"), "{e}");
        assert!(UnitSerde.deserialize(Some(b"x")).is_err());
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip_and_error() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Order {
            id: u32,
            item: String,
        }
        round_trip(
            &JsonSerde::<Order>::new(),
            Order {
                id: 1,
                item: "x".into(),
            },
        );
        round_trip(
            &JsonSerde::<Order>::new(),
            Json(Order {
                id: 2,
                item: "y".into(),
            }),
        );
        let e = Serde::<Order>::deserialize(&JsonSerde::<Order>::new(), Some(b"{")).unwrap_err();
        assert!(e.to_string().starts_with("JSON:"), "{e}");
    }
}
