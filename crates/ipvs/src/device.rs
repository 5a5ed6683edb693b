//! `kube-ipvs0` as the proxier sees it ([`crate::proxier::Interfaces`]), over the
//! rtnetlink handle of [`crate::links`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use kpr_model::IpFamily;

use crate::links::Links;
use crate::proxier::DUMMY_DEVICE;

/// `kube-ipvs0` through rtnetlink, as the proxier uses it.
#[derive(Debug)]
pub struct Device(pub Links);

impl crate::proxier::Interfaces for Device {
    fn ensure_dummy(&mut self) -> Result<(), String> {
        self.0
            .ensure_dummy(DUMMY_DEVICE)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn bound(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, String> {
        self.0
            .addresses(DUMMY_DEVICE, family)
            .map_err(|e| e.to_string())
    }
    fn bind(&mut self, ip: IpAddr) -> Result<(), String> {
        self.0
            .add_address(DUMMY_DEVICE, ip)
            .map_err(|e| format!("bind {ip}: {e}"))
    }
    fn unbind(&mut self, ip: IpAddr) -> Result<(), String> {
        self.0
            .delete_address(DUMMY_DEVICE, ip)
            .map_err(|e| format!("unbind {ip}: {e}"))
    }
}
