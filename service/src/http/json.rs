//! JSON bodies as the OpenAPI document describes them: objects, whose whole numbers may carry a point.

use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::Deserialize as _;

use crate::error::{ApiError, ErrorCode};

/// A JSON body that must be an object, as the document describes every body. serde alone would also build a
/// struct from an array of its fields in order (`[null, 5]`).
pub(crate) struct JsonObject<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonObject<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let axum::Json(value) = <axum::Json<serde_json::Value> as FromRequest<S>>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Self::from_value(value).map_err(IntoResponse::into_response)
    }
}

/// Absent (no `Content-Type`, no body) or `null`: no options given.
impl<S: Send + Sync, T: serde::de::DeserializeOwned> OptionalFromRequest<S> for JsonObject<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Response> {
        let value = <axum::Json<serde_json::Value> as OptionalFromRequest<S>>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match value {
            None | Some(axum::Json(serde_json::Value::Null)) => Ok(None),
            Some(axum::Json(value)) => Self::from_value(value).map(Some).map_err(IntoResponse::into_response),
        }
    }
}

impl<T: serde::de::DeserializeOwned> JsonObject<T> {
    fn from_value(value: serde_json::Value) -> Result<Self, ApiError> {
        let unprocessable = |message: String| ApiError::Unprocessable(ErrorCode::InvalidBody, message);
        if !value.is_object() {
            return Err(unprocessable("the body must be a JSON object".into()));
        }
        serde_path_to_error::deserialize(value)
            .map(JsonObject)
            .map_err(|e| unprocessable(format!("the body is not valid: {e}")))
    }
}

/// A whole number in a JSON body. JSON Schema counts `5.0` as the integer 5, and clients (JavaScript's among them)
/// may send it so; serde alone refuses it. A fraction, or a number outside `T`, is still refused.
pub(crate) struct Whole<T>(pub(crate) T);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> serde::Deserialize<'de> for Whole<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected, Visitor};
        struct Whole_<T>(std::marker::PhantomData<T>);
        impl<T: TryFrom<i64> + TryFrom<u64>> Visitor<'_> for Whole_<T> {
            type Value = Whole<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number in range")
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Whole<T>, E> {
                T::try_from(v).map(Whole).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Whole<T>, E> {
                T::try_from(v).map(Whole).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Whole<T>, E> {
                // 2^64 and -2^63 are exact as f64; `as` is exact for whole numbers between them.
                match v {
                    v if v.fract() != 0.0 || !v.is_finite() => Err(E::invalid_value(Unexpected::Float(v), &self)),
                    v if (0.0..18_446_744_073_709_551_616.0).contains(&v) => self.visit_u64(v as u64),
                    v if (-9_223_372_036_854_775_808.0..0.0).contains(&v) => self.visit_i64(v as i64),
                    v => Err(E::invalid_value(Unexpected::Float(v), &self)),
                }
            }
        }
        d.deserialize_any(Whole_(std::marker::PhantomData))
    }
}

/// `deserialize_with` for an optional [`Whole`] number (with `#[serde(default)]`).
pub(crate) fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    Option::<Whole<T>>::deserialize(d).map(|w| w.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: TryFrom<i64> + TryFrom<u64>>(json: &str) -> Result<Option<T>, serde_json::Error> {
        whole(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn whole_numbers_may_carry_a_point_and_nothing_else_passes() {
        assert_eq!(read::<i64>("5").unwrap(), Some(5));
        assert_eq!(read::<i64>("5.0").unwrap(), Some(5));
        assert_eq!(read::<i64>("-2340.0").unwrap(), Some(-2340));
        assert_eq!(read::<u64>("2881023628.0").unwrap(), Some(2_881_023_628));
        assert_eq!(read::<i64>("null").unwrap(), None);
        for refused in ["5.5", "1e300", "\"5\"", "true"] {
            assert!(read::<i64>(refused).is_err(), "{refused}");
        }
        // Outside the target type, exactly at its edges.
        assert!(read::<u64>("-1").is_err() && read::<u64>("-1.0").is_err());
        assert!(read::<u64>("18446744073709551616.0").is_err());
        assert_eq!(read::<i64>("-9223372036854775808.0").unwrap(), Some(i64::MIN));
        assert!(read::<i64>("9223372036854775808.0").is_err());
    }
}
