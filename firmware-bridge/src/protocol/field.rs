//! Typed fields: the named n-dimensional arrays carried by scan and result messages, and
//! the element types of fields and frame payloads. Their wire encoding is in `encode.rs`
//! ([`Field::encode_into`]) and `decode.rs` ([`Field::decode`]).

use super::MAX_NDIM;

/// Element types of frame payloads and fields (all little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dtype {
    I16 = 1,
    F32 = 2,
    F64 = 3,
    U8 = 4,
}

impl Dtype {
    /// Decodes the dtype code.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Dtype::I16),
            2 => Some(Dtype::F32),
            3 => Some(Dtype::F64),
            4 => Some(Dtype::U8),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::U8 => 1,
        }
    }

    /// Lower-case name (`int16`, `float32`, `float64`, `uint8`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::I16 => "int16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::U8 => "uint8",
        }
    }
}

/// A named n-dimensional array, as carried by scan and result messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// ASCII name, 1 to 255 bytes.
    pub name: String,
    /// Dimensions, C order (empty for a scalar).
    pub shape: Vec<u32>,
    /// The values.
    pub data: FieldData,
}

/// Values of a [`Field`].
#[derive(Clone, Debug, PartialEq)]
pub enum FieldData {
    I16(Vec<i16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
}

impl FieldData {
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match self {
            FieldData::I16(_) => Dtype::I16,
            FieldData::F32(_) => Dtype::F32,
            FieldData::F64(_) => Dtype::F64,
            FieldData::U8(_) => Dtype::U8,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            FieldData::I16(v) => v.len(),
            FieldData::F32(v) => v.len(),
            FieldData::F64(v) => v.len(),
            FieldData::U8(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Field {
    /// A float64 field.
    pub fn f64(name: &str, shape: Vec<u32>, values: Vec<f64>) -> Self {
        Field {
            name: name.to_string(),
            shape,
            data: FieldData::F64(values),
        }
    }

    /// A float64 scalar.
    pub fn scalar(name: &str, value: f64) -> Self {
        Field::f64(name, Vec::new(), vec![value])
    }

    /// The values as float64 when the field is float64.
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            FieldData::F64(v) => Some(v),
            _ => None,
        }
    }

    /// Checks that the field can be encoded: a name of 1 to 255 ASCII bytes, at most
    /// [`MAX_NDIM`] dimensions, and as many values as the shape holds.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 255 || !self.name.is_ascii() {
            return Err(format!(
                "field name {:?} must be 1..=255 ASCII bytes",
                self.name
            ));
        }
        if self.shape.len() > MAX_NDIM {
            return Err(format!(
                "field {} has {} dimensions, at most {MAX_NDIM}",
                self.name,
                self.shape.len()
            ));
        }
        let count = self
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        if count != Some(self.data.len()) {
            return Err(format!(
                "field {}: shape {:?} does not hold {} values",
                self.name,
                self.shape,
                self.data.len()
            ));
        }
        Ok(())
    }
}
