//! Operator actions: projects and devices (the CLI, and later the console, call these).

use serde::Serialize;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::storage::projects::ProjectRow;
use crate::storage::sessions::DeviceRow;
use crate::storage::{Db, now_ms, projects, sessions};
use crate::values::{ProjectId, SessionId};

#[derive(Clone)]
pub struct Admin {
    db: Db,
    key: MasterKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedProject {
    pub project_id: String,
    pub name: String,
    pub api_key: String,
    /// Shown once; stored only encrypted.
    pub api_secret: String,
    pub rate_limit_per_minute: i64,
    pub monthly_quota: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectSummary {
    pub project_id: String,
    pub name: String,
    pub api_key_prefix: String,
    pub rate_limit_per_minute: i64,
    pub monthly_quota: i64,
    pub suspended: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    pub device_id: String,
    pub device_code: String,
    pub project_id: String,
    pub name: String,
    pub state: String,
    pub created_at: String,
}

pub struct NewProject {
    pub name: String,
    pub rate_limit_per_minute: i64,
    pub monthly_quota: i64,
    pub max_sessions: i64,
}

impl From<DeviceRow> for DeviceSummary {
    fn from(d: DeviceRow) -> Self {
        DeviceSummary {
            device_id: d.id.into(),
            device_code: d.code,
            project_id: d.project_id.into(),
            name: d.name,
            state: d.state,
            created_at: crate::domain::messaging::rfc3339(d.created_at),
        }
    }
}

/// Device codes look like the RK document's `RK-XXXX`: an unambiguous alphabet, 6 symbols.
pub(super) fn generate_device_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = crypto::random_bytes::<6>();
    let code: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("RK-{code}")
}

pub(super) fn valid_device_code(code: &str) -> bool {
    (3..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Admin {
    pub fn new(db: Db, key: MasterKey) -> Self {
        Admin { db, key }
    }

    pub async fn create_project(&self, p: NewProject) -> Result<CreatedProject> {
        super::text::no_nul("project name", &p.name)?;
        if p.name.trim().is_empty() || p.name.len() > 200 {
            return Err(Error::InvalidRequest(
                "project name must be 1 to 200 characters".into(),
            ));
        }
        if p.rate_limit_per_minute < 1 || p.monthly_quota < 0 || p.max_sessions < 0 {
            return Err(Error::InvalidRequest("limits must be positive".into()));
        }
        let api_key = crypto::random_token("wgk_");
        let api_secret = crypto::random_token("wgs_");
        let row = ProjectRow {
            id: ProjectId::new(uuid::Uuid::now_v7().to_string()),
            name: p.name.trim().to_owned(),
            api_key_hash: crypto::hash_api_key(&api_key),
            api_key_prefix: api_key[..12].to_owned(),
            api_secret_enc: self.key.seal(api_secret.as_bytes()),
            rate_limit_per_minute: p.rate_limit_per_minute,
            monthly_quota: p.monthly_quota,
            max_sessions: p.max_sessions,
            suspended: false,
            created_at: now_ms(),
            refuse_replays: false,
        };
        let out = CreatedProject {
            project_id: row.id.to_string(),
            name: row.name.clone(),
            api_key,
            api_secret,
            rate_limit_per_minute: row.rate_limit_per_minute,
            monthly_quota: row.monthly_quota,
        };
        self.db
            .run(move |c| projects::insert_project(c, &row))
            .await?;
        Ok(out)
    }

    /// Turns the project's replay guard on or off: with it on, a request signature already
    /// seen within the signing window is refused (`SIGNATURE_REPLAYED`).
    pub async fn set_refuse_replays(&self, project_id: &str, on: bool) -> Result<()> {
        let pid = ProjectId::from(project_id);
        match self
            .db
            .run(move |c| projects::set_refuse_replays(c, &pid, on))
            .await?
        {
            true => Ok(()),
            false => Err(Error::ProjectNotFound),
        }
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectSummary>> {
        let rows = self.db.run(projects::list_projects).await?;
        Ok(rows
            .into_iter()
            .map(|p| ProjectSummary {
                project_id: p.id.into(),
                name: p.name,
                api_key_prefix: p.api_key_prefix,
                rate_limit_per_minute: p.rate_limit_per_minute,
                monthly_quota: p.monthly_quota,
                suspended: p.suspended,
                created_at: crate::domain::messaging::rfc3339(p.created_at),
            })
            .collect())
    }

    pub async fn create_device(
        &self,
        project_id: &str,
        code: Option<String>,
        name: Option<String>,
    ) -> Result<DeviceSummary> {
        super::text::no_nul("project id", project_id)?;
        super::text::no_nul_opt("name", name.as_deref())?;
        let pid = ProjectId::from(project_id);
        let p = pid.clone();
        let exists = self.db.run(move |c| projects::project_by_id(c, &p)).await?;
        if exists.is_none() {
            return Err(Error::ProjectNotFound);
        }
        if let Some(c) = &code
            && !valid_device_code(c)
        {
            return Err(Error::InvalidRequest(
                "device code must be 3 to 64 characters of letters, digits, '-' or '_'".into(),
            ));
        }
        let explicit = code.is_some();
        // A generated code may collide (1 in 10^9): try a few times.
        for _ in 0..5 {
            let code = code.clone().unwrap_or_else(generate_device_code);
            let row = DeviceRow {
                id: SessionId::new(uuid::Uuid::now_v7().to_string()),
                project_id: pid.clone(),
                name: name.clone().unwrap_or_else(|| code.clone()),
                code,
                state: "pending".into(),
                created_at: now_ms(),
            };
            let insert = row.clone();
            match self
                .db
                .run(move |c| sessions::insert_device(c, &insert))
                .await
            {
                Ok(()) => return Ok(row.into()),
                Err(Error::DeviceCodeTaken) if !explicit => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::DeviceCodeTaken)
    }

    pub async fn list_devices(&self, project_id: &str) -> Result<Vec<DeviceSummary>> {
        super::text::no_nul("project id", project_id)?;
        let pid = ProjectId::from(project_id);
        let rows = self
            .db
            .run(move |c| sessions::list_devices(c, &pid))
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
