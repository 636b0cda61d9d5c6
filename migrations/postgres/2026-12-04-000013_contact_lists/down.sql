DROP TABLE suppressions;
DROP TABLE contact_list_rejects;
DROP TABLE contact_list_contacts;
DROP TABLE contact_lists;
