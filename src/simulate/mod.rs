//! Simulation of lung ultrasound recordings: probe, phantoms, RF through the operator.

pub mod phantom;
pub mod probe;
