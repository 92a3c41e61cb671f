//! Who may do what. Every rule of BAAS's authorization lives here, as plain
//! functions over the actor and the thing, so that the REST API, the web UI,
//! the bindings and the agent endpoints all obey the same rules.
//!
//! Convention: a caller who may not even read a thing gets `NotFound` (its
//! existence is not leaked); a caller who may read but not change it gets
//! `Forbidden`.

use super::Actor;
use crate::model::*;
use crate::{Error, Result};

/// May `actor` read `image`?
pub fn can_read_image(actor: &Actor, image: &Image) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { .. } => false,
        Actor::User { id, role, .. } => {
            *role == Role::Admin
                || image.owner == *id
                || image.visibility == Visibility::Public
                || (image.visibility == Visibility::Shared && image.shared_with.contains(id))
        }
    }
}

/// May `actor` write `image` (new versions, rename, delete, share)?
pub fn can_write_image(actor: &Actor, image: &Image) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { .. } => false,
        Actor::User { id, role, .. } => *role == Role::Admin || image.owner == *id,
    }
}

/// Reading first, then writing.
pub fn check_write_image(actor: &Actor, image: &Image) -> Result<()> {
    if !can_read_image(actor, image) {
        return Err(Error::not_found(format!("image {}", image.id)));
    }
    if !can_write_image(actor, image) {
        return Err(Error::forbidden(format!(
            "only the owner of image {} or an admin may change it",
            image.id
        )));
    }
    Ok(())
}

/// Making an image public publishes it to every user: moderators and
/// admins only.
pub fn check_publish(actor: &Actor) -> Result<()> {
    if actor.at_least(Role::Moderator) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only moderators and admins may make an image public",
        ))
    }
}

/// May `actor` see `user`'s account?
pub fn can_read_user(actor: &Actor, user: UserId) -> bool {
    actor.user_id() == Some(user) || actor.at_least(Role::Moderator)
}

/// Managing users (create, delete, change roles): admins.
pub fn check_admin(actor: &Actor, what: &str) -> Result<()> {
    if actor.at_least(Role::Admin) {
        Ok(())
    } else {
        Err(Error::forbidden(format!("only admins may {what}")))
    }
}

/// Managing machines and the queue: moderators and admins.
pub fn check_moderator(actor: &Actor, what: &str) -> Result<()> {
    if actor.at_least(Role::Moderator) {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "only moderators and admins may {what}"
        )))
    }
}

/// Switching a machine's power by hand (on, off, cycle): moderators and
/// admins, who run the lab; users get their machine through jobs.
pub fn check_power(actor: &Actor) -> Result<()> {
    check_moderator(actor, "switch machines' power")
}

/// May `actor` switch machines' power by hand (shows the buttons)?
pub fn can_power(actor: &Actor) -> bool {
    check_power(actor).is_ok()
}

/// Any authenticated user (not an agent).
pub fn check_user(actor: &Actor) -> Result<UserId> {
    match actor {
        Actor::User { id, .. } => Ok(*id),
        Actor::System => Err(Error::invalid(
            "owner",
            "the system actor must name an owner",
        )),
        Actor::Agent { .. } => Err(Error::forbidden(
            "machine credentials may only be used by the agent",
        )),
    }
}

/// May `actor` read or change `setup`?
pub fn can_access_setup(actor: &Actor, setup: &Setup) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { .. } => false,
        Actor::User { id, role, .. } => *role == Role::Admin || setup.owner == *id,
    }
}

/// May `actor` see `job` (its details and timeline)?
pub fn can_read_job(actor: &Actor, job: &Job) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { machine } => job.machine == *machine,
        Actor::User { id, role, .. } => *role >= Role::Moderator || job.owner == *id,
    }
}

/// May `actor` cancel `job`?
pub fn can_cancel_job(actor: &Actor, job: &Job) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { .. } => false,
        Actor::User { id, role, .. } => *role >= Role::Moderator || job.owner == *id,
    }
}

/// May `actor` see or cancel `placement`, a job still waiting for a
/// machine (its owner, moderators, admins)? Anyone may list what waits.
pub fn can_cancel_placement(actor: &Actor, placement: &Placement) -> bool {
    match actor {
        Actor::System => true,
        Actor::Agent { .. } => false,
        Actor::User { id, role, .. } => *role >= Role::Moderator || placement.owner == *id,
    }
}

/// May `actor` drive `machine`'s queue as its agent (take jobs, report)?
pub fn check_agent_for(actor: &Actor, machine: MachineId) -> Result<()> {
    match actor {
        Actor::Agent { machine: m } if *m == machine => Ok(()),
        Actor::Agent { .. } => Err(Error::forbidden(
            "this credential belongs to another machine",
        )),
        _ if actor.at_least(Role::Moderator) => Ok(()),
        _ => Err(Error::forbidden(
            "only the machine's agent, moderators and admins may drive its queue",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn user(n: u128, role: Role) -> Actor {
        Actor::User {
            id: UserId(Uuid::from_u128(n)),
            name: format!("u{n}"),
            role,
        }
    }

    fn image(owner: u128, visibility: Visibility, shared: &[u128]) -> Image {
        Image {
            id: ImageId(Uuid::from_u128(99)),
            owner: UserId(Uuid::from_u128(owner)),
            name: "img".into(),
            disk: DiskSelector::first(),
            size: 1,
            metadata: Default::default(),
            visibility,
            shared_with: shared.iter().map(|n| UserId(Uuid::from_u128(*n))).collect(),
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn image_matrix() {
        let owner = user(1, Role::User);
        let other = user(2, Role::User);
        let friend = user(3, Role::User);
        let moderator = user(4, Role::Moderator);
        let admin = user(5, Role::Admin);
        let agent = Actor::Agent {
            machine: MachineId(Uuid::from_u128(7)),
        };
        let private = image(1, Visibility::Private, &[3]);
        let shared = image(1, Visibility::Shared, &[3]);
        let public = image(1, Visibility::Public, &[]);
        // (actor, private, shared, public) readable?
        for (a, p, s, pu) in [
            (&owner, true, true, true),
            (&other, false, false, true),
            (&friend, false, true, true),
            (&moderator, false, false, true),
            (&admin, true, true, true),
            (&agent, false, false, false),
        ] {
            assert_eq!(can_read_image(a, &private), p, "{a:?} private");
            assert_eq!(can_read_image(a, &shared), s, "{a:?} shared");
            assert_eq!(can_read_image(a, &public), pu, "{a:?} public");
        }
        assert!(check_write_image(&owner, &public).is_ok());
        assert!(check_write_image(&admin, &private).is_ok());
        assert_eq!(
            check_write_image(&other, &private).map_err(|e| e.kind()),
            Err(crate::ErrorKind::NotFound)
        );
        assert_eq!(
            check_write_image(&friend, &shared).map_err(|e| e.kind()),
            Err(crate::ErrorKind::Forbidden)
        );
        assert!(check_publish(&owner).is_err());
        assert!(check_publish(&moderator).is_ok());
    }
}
